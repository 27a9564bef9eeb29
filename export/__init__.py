"""Workstation side: BioLingual checkpoint -> verified bundle (ONNX, label embeddings, precision variants)."""
