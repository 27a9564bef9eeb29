"""``biolingual-export onnx``: checkpoint -> bundle with the fp32 encoder, manifest and parity report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.model.backends.ort import OrtBackend
from edge.model.bundle import ORT_OPTIMIZED_KEY, Bundle, Manifest, ModelEntry, write_manifest
from edge.model.frontend import LogMelFrontend
from export.checkpoint import Checkpoint, projected
from export.errors import ExportError
from export.onnx_export import export_audio_onnx
from export.optimize import add_optimized_model
from export.parity import (
    FP32_MAX_ABS,
    FP32_MIN_COSINE,
    PARITY_BATCHES,
    agreement,
    batches,
    real_windows,
    write_report,
)
from export.versions import tool_versions

FP32_FILE = "audio_encoder.fp32.onnx"
PARITY_STAGE = "torch_fp32->ort_fp32"
OPTIMIZED_PARITY_STAGE = "torch_fp32->ort_fp32_optimized"


def torch_embeddings(checkpoint: Checkpoint, features: np.ndarray) -> np.ndarray:
    """Reference embeddings from ``ClapModel.get_audio_features`` (fp32, eager)."""
    import torch

    with torch.no_grad():
        out = checkpoint.model.get_audio_features(input_features=torch.from_numpy(features))
    return projected(out).numpy()


def export_fp32_bundle(checkpoint: Checkpoint, out_dir: Path, parity_audio: Path) -> Manifest:
    """Export, write the manifest, and fail (removing the model file) unless ORT matches torch."""
    out_dir.mkdir(parents=True, exist_ok=True)
    params = checkpoint.frontend
    exported = export_audio_onnx(checkpoint.model, params.n_frames, params.n_mels, out_dir / FP32_FILE)
    entry = ModelEntry(path=FP32_FILE, precision="fp32", runtime="onnxruntime", inputs=exported.inputs,
                       outputs=exported.outputs, opset=exported.opset)
    manifest = write_manifest(out_dir, Manifest(
        model_id=checkpoint.model_id, model_revision=checkpoint.revision, frontend=params,
        embedding_dim=checkpoint.embedding_dim, logit_scale=checkpoint.logit_scale,
        models={"fp32": entry}, tool_versions=tool_versions()))

    features = real_windows(parity_audio, LogMelFrontend(params), sum(PARITY_BATCHES))
    backend = OrtBackend(Bundle(out_dir, manifest), "fp32")
    reference = torch_embeddings(checkpoint, features)
    candidate = np.concatenate([backend.embed(b) for b in batches(features)])
    result = agreement(reference, candidate)
    passed = result.max_abs <= FP32_MAX_ABS and result.min_cosine >= FP32_MIN_COSINE
    write_report(out_dir, PARITY_STAGE, result, {"max_abs": FP32_MAX_ABS, "min_cosine": FP32_MIN_COSINE}, passed,
                 model_key="fp32")
    if not passed:
        (out_dir / FP32_FILE).unlink()
        raise ExportError(
            f"ONNX Runtime disagrees with torch: max abs {result.max_abs:.2e} (gate {FP32_MAX_ABS:g}), "
            f"min cosine {result.min_cosine:.6f} (gate {FP32_MIN_COSINE})",
            "see parity.json; try another torch/onnxruntime version",
        )
    plain = write_manifest(out_dir, manifest)
    return check_optimized(out_dir, add_optimized_model(out_dir, plain), plain, reference, features)


def check_optimized(out_dir: Path, manifest: Manifest, plain: Manifest, reference: np.ndarray,
                    features: np.ndarray) -> Manifest:
    """Gate the ONNX Runtime-optimised graph against torch like the exported one; drop it if it fails."""
    backend = OrtBackend(Bundle(out_dir, manifest), "fp32")
    result = agreement(reference, np.concatenate([backend.embed(b) for b in batches(features)]))
    passed = result.max_abs <= FP32_MAX_ABS and result.min_cosine >= FP32_MIN_COSINE
    write_report(out_dir, OPTIMIZED_PARITY_STAGE, result, {"max_abs": FP32_MAX_ABS, "min_cosine": FP32_MIN_COSINE},
                 passed)
    if not passed:
        (out_dir / manifest.models["fp32"].details[ORT_OPTIMIZED_KEY]["path"]).unlink()
        write_manifest(out_dir, plain)
        raise ExportError(f"the optimised graph disagrees with torch: max abs {result.max_abs:.2e}, "
                          f"min cosine {result.min_cosine:.6f}",
                          "see parity.json; report the torch/onnxruntime versions")
    return write_manifest(out_dir, manifest)
