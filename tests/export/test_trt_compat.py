"""The static TensorRT check passes every graph meant for TensorRT and names the nodes it would reject."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from edge.model.bundle import open_bundle
from export.trt_compat import check_file, check_model


def test_every_graph_for_tensorrt_is_compatible(precision_bundle: Path) -> None:
    bundle = open_bundle(precision_bundle)
    for key in ("fp32", "fp16", "int8-trt"):
        problems = check_file(precision_bundle / bundle.model(key).path)
        assert problems == [], f"{key}: {[str(p) for p in problems[:3]]}"


def test_uint8_qdq_for_onnx_runtime_is_flagged_by_node_name(precision_bundle: Path) -> None:
    path = precision_bundle / open_bundle(precision_bundle).model("int8").path
    problems = check_file(path)
    nodes = onnx.load(str(path)).graph.node
    names = {n.name for n in nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    contrib = {n.name for n in nodes if n.domain == "com.microsoft"}  # quantised after ORT's fusions: ORT-only
    assert problems and {p.node for p in problems} <= names | contrib
    assert all("uint8" in p.reason for p in problems if p.node in names)
    assert any(p.node in names for p in problems)


def test_dynamic_quantization_is_flagged(precision_bundle: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(precision_bundle / "audio_encoder.fp32.onnx"), str(dynamic))
    ops = {p.op_type for p in check_file(dynamic)}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops


def test_stft_and_custom_domain_nodes_are_flagged_by_name() -> None:
    graph = helper.make_graph(
        [helper.make_node("STFT", ["signal", "step"], ["spec"], name="frontend_stft"),
         helper.make_node("FusedGemm", ["spec", "spec"], ["out"], name="ms_gemm", domain="com.microsoft")],
        "g", [helper.make_tensor_value_info("signal", TensorProto.FLOAT, [1, 480000, 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("step", TensorProto.INT64, [], [480])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    found = {p.node: p for p in check_model(model)}
    assert set(found) == {"frontend_stft", "ms_gemm"}
    assert found["frontend_stft"].targets == ("10.3",)  # real-valued STFT with a constant step: TensorRT 10.5+
    assert found["ms_gemm"].targets == ("10.3", "10.15", "11.x") and "plugin" in found["ms_gemm"].reason
