"""Audio tower -> one self-contained ONNX file: ``input_features (B,1,T,M) -> audio_embeds (B,D)`` L2-normalised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.model.bundle import TensorSpec
from export.errors import ExportError
from export.optimize import resize_to_matmul
from export.quiet import quiet_third_party

INPUT_NAME = "input_features"
OUTPUT_NAME = "audio_embeds"
BATCH_AXIS = "batch"
MAX_EXPORT_BATCH = 64
TRACE_BATCH = 2
"""Trace with more than one window so the exporter cannot bake batch 1 into a Reshape."""
OPSET = 18
"""What the dynamo exporter emits (it upgrades 17 to 18). TensorRT 10.x (JetPack 6) reads it;
TensorRT 8.5 (JetPack 5) would need <= 17, which this exporter cannot produce."""


@dataclass(frozen=True)
class OnnxExport:
    """Facts about an exported encoder file."""

    path: Path
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def audio_tower(model: Any) -> Any:
    """``nn.Module`` wrapping ClapModel's audio encoder + projection + L2 normalisation."""
    import torch

    class AudioTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_model = model.audio_model
            self.audio_projection = model.audio_projection

        def forward(self, input_features: torch.Tensor) -> torch.Tensor:
            pooled = self.audio_model(input_features=input_features).pooler_output
            return torch.nn.functional.normalize(self.audio_projection(pooled), dim=-1)

    return AudioTower().eval()


def export_audio_onnx(model: Any, n_frames: int, n_mels: int, out_path: Path) -> OnnxExport:
    """Export with ``torch.onnx.export(dynamo=True)`` and a dynamic batch axis; no external data."""
    import onnx
    import torch

    tower = audio_tower(model)
    example = torch.randn(TRACE_BATCH, 1, n_frames, n_mels)
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=MAX_EXPORT_BATCH)
    try:
        with torch.no_grad(), quiet_third_party():
            torch.onnx.export(tower, (example,), str(out_path), dynamo=True, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes={"input_features": {0: batch}}, external_data=False,
                              verbose=False)
    except Exception as e:  # the exporter raises many internal types; the message is what matters
        raise ExportError(f"ONNX export of the audio tower failed: {str(e).splitlines()[0]}",
                          "check the torch/onnxscript versions in pyproject.toml's export extra") from e
    graph = onnx.load(str(out_path), load_external_data=False)
    # TensorRT's ONNX parser takes only nearest/linear Resize; HTS-AT's bicubic 1001->1024 stretch is an
    # exact constant MatMul instead (also closer to torch than ORT's cubic kernel).
    graph, replaced = resize_to_matmul(graph)
    if replaced:
        onnx.save(graph, str(out_path))
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    dim = int(model.config.projection_dim)
    return OnnxExport(
        path=out_path,
        opset=opset,
        inputs=(TensorSpec(INPUT_NAME, (BATCH_AXIS, 1, n_frames, n_mels), "float32"),),
        outputs=(TensorSpec(OUTPUT_NAME, (BATCH_AXIS, dim), "float32"),),
    )
