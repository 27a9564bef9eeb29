"""INT8 (ORT and TensorRT flavours) and FP16 files: right ops, in the manifest with parity numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from typer.testing import CliRunner

from edge.model.bundle import open_bundle
from export.cli import app
from export.fidelity import gates_for
from export.trt_compat import KNOWN_UNSUPPORTED

runner = CliRunner()


def zero_point_types(path: Path) -> set[np.dtype]:
    model = onnx.load(str(path))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {constants[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_int8_files_hold_only_ops_their_runtime_accepts(precision_bundle: Path) -> None:
    bundle = open_bundle(precision_bundle)
    for key, activations in (("int8", np.uint8), ("int8-trt", np.int8)):
        path = precision_bundle / bundle.model(key).path
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "QuantizeLinear" in ops and not ops & set(KNOWN_UNSUPPORTED)
        assert zero_point_types(path) == {np.dtype(activations)}


def test_sensitive_head_stays_fp32(precision_bundle: Path) -> None:
    entry = open_bundle(precision_bundle).model("int8-trt")
    kept = entry.details["kept_fp32_nodes"]
    model = onnx.load(str(precision_bundle / entry.path))
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = {n.name: n for n in model.graph.node}
    assert kept and all(not set(nodes[name].input) & dequantized for name in kept)


def test_fp16_keeps_float32_io_and_parity_is_recorded(precision_bundle: Path) -> None:
    bundle = open_bundle(precision_bundle)
    model = onnx.load(str(precision_bundle / bundle.model("fp16").path))
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    for key in ("fp16", "int8", "int8-trt"):
        parity = bundle.model(key).details["parity_vs_fp32"]
        assert parity["mean_centred_cosine"] >= gates_for(key).min_centred_cosine
        assert bundle.manifest.files[bundle.model(key).path]


def test_bundle_without_fp32_onnx_is_one_line_error(precision_bundle: Path, calibration_dir: Path,
                                                    tmp_path: Path) -> None:
    copy = Path(shutil.copytree(precision_bundle, tmp_path / "b"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["models"]["fp32"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["quantize", "--bundle", str(copy), "--calibration", str(calibration_dir)])
    assert result.exit_code == 2 and "has no fp32 model" in result.output and "Traceback" not in result.output


def test_corrupted_onnx_is_one_line_error(precision_bundle: Path, calibration_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(precision_bundle, tmp_path / "b"))
    (copy / "audio_encoder.fp32.onnx").write_bytes(b"\x08\x07garbage")
    result = runner.invoke(app, ["quantize", "--bundle", str(copy), "--calibration", str(calibration_dir)])
    assert result.exit_code == 2 and "corrupted" in result.output and "Traceback" not in result.output
