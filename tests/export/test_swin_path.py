"""A shifted-window encoder (two blocks per stage: attention masks and rolls in the graph) through export,
INT8 for ONNX Runtime and for TensorRT, and the TensorRT operator check; the tiny model has one block per
stage and never exports a shifted block."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from edge.model.bundle import open_bundle
from export.synthetic import SWIN_AUDIO
from export.trt_compat import TRT_TARGETS, check_file

CALIBRATION_WINDOWS = 24
"""Enough for one calibration batch of 8 after the hold-out split; speed, not scale quality, matters here."""


@pytest.fixture(scope="module")
def swin_bundle(tmp_path_factory: pytest.TempPathFactory, precision_audio: tuple[Path, Path]) -> Path:
    from calibration.dataset import build_calibration_set
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.quantize import QuantizeOptions, add_precision
    from export.synthetic import build_checkpoint

    checkpoint = load_checkpoint(str(build_checkpoint(tmp_path_factory.mktemp("swin_checkpoint"), "swin", seed=0)))
    blocks = [b for layer in checkpoint.model.audio_model.audio_encoder.layers for b in layer.blocks]
    assert sum(b.shift_size > 0 for b in blocks) >= 3, "shifted-window blocks must be in the model"
    out = tmp_path_factory.mktemp("swin") / "bundle"
    export_fp32_bundle(checkpoint, out, precision_audio[1])
    data = build_calibration_set([precision_audio[0]], checkpoint.frontend, CALIBRATION_WINDOWS, seed=0)
    for target in ("ort", "trt"):
        add_precision(out, data, QuantizeOptions(precision="int8", target=target))
    return out


def test_every_block_exports_its_attention(swin_bundle: Path) -> None:
    model = onnx.load(str(swin_bundle / open_bundle(swin_bundle).model("fp32").path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Softmax") == sum(SWIN_AUDIO["depths"])  # type: ignore[arg-type]


def test_shifted_window_graphs_for_tensorrt_pass_the_operator_check(swin_bundle: Path) -> None:
    bundle = open_bundle(swin_bundle)
    for key in ("fp32", "int8-trt"):
        problems = check_file(swin_bundle / bundle.model(key).path, TRT_TARGETS)
        assert problems == [], f"{key}: {[str(p) for p in problems[:3]]}"
    assert bundle.model("int8-trt").details["trt_compatible"] is True


def test_shifted_window_int8_has_both_flavours_with_parity_numbers(swin_bundle: Path) -> None:
    bundle = open_bundle(swin_bundle)
    for key in ("int8", "int8-trt"):
        details = bundle.model(key).details
        assert details["parity_vs_fp32"]["mean_centred_cosine"] > 0.9
        assert any(name.endswith("_as_matmul") for name in details["higher_precision_nodes"])
    nodes = onnx.load(str(swin_bundle / bundle.model("int8-trt").path)).graph.node
    quantized = {i for n in nodes if n.op_type == "QuantizeLinear" for i in n.input}
    compute_outputs = {n.output[0] for n in nodes if n.op_type in ("Conv", "MatMul", "Gemm")}
    assert not compute_outputs & quantized


def test_window_partitions_are_gathers_in_the_onnx_runtime_graphs_and_pass_their_gates(swin_bundle: Path) -> None:
    bundle = open_bundle(swin_bundle)
    optimized = bundle.model("fp32").details["ort_optimized"]
    assert (swin_bundle / optimized["path"]).is_file(), "the optimised graph passed its parity gate vs torch"
    gathers = [s for s in optimized["steps"] if s.startswith("windows_as_gather")]
    blocks = sum(SWIN_AUDIO["depths"])  # type: ignore[arg-type]
    assert gathers and int(gathers[0].rsplit("x", 1)[1]) >= blocks  # at least one partition per block
    int8_ops = [n.op_type for n in onnx.load(str(swin_bundle / bundle.model("int8").path)).graph.node]
    assert int8_ops.count("Gather") >= blocks and "Pad" not in int8_ops
    trt_nodes = onnx.load(str(swin_bundle / bundle.model("int8-trt").path)).graph.node
    assert not [n.name for n in trt_nodes if n.name.endswith("_window_gather")]  # TensorRT's: the standard export
