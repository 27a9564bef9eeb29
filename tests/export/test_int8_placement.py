"""INT8 for TensorRT: Q/DQ on the inputs of Conv/MatMul/Gemm only, the exact stretch MatMul left in float,
and the manifest naming every compute node that stays in higher precision."""

from __future__ import annotations

from pathlib import Path

import onnx

from edge.model.bundle import open_bundle
from export.int8 import QUANTIZED_OP_TYPES

COMPUTE = set(QUANTIZED_OP_TYPES)


def load(bundle: Path, key: str) -> onnx.ModelProto:
    return onnx.load(str(bundle / open_bundle(bundle).model(key).path))


def test_exact_stretch_matmul_is_never_quantized(precision_bundle: Path) -> None:
    for key in ("int8", "int8-trt"):
        model = load(precision_bundle, key)
        producers = {o: n for n in model.graph.node for o in n.output}
        stretches = [n for n in model.graph.node if n.name.endswith("_as_matmul")]
        assert stretches, "the exported graph has the bicubic stretch as a MatMul"
        for node in stretches:
            fed_by = {producers[i].op_type for i in node.input if i in producers}
            assert "DequantizeLinear" not in fed_by, f"{key}: {node.name} is quantized"


def test_trt_int8_quantizes_inputs_of_compute_ops_not_their_outputs(precision_bundle: Path) -> None:
    model = load(precision_bundle, "int8-trt")
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    compute = [n for n in model.graph.node if n.op_type in COMPUTE]
    quantized_outputs = [n.name for n in compute if "QuantizeLinear" in consumers.get(n.output[0], [])]
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    quantized_inputs = [n.name for n in compute if set(n.input) & dequantized]
    assert quantized_outputs == []
    assert len(quantized_inputs) >= len(compute) // 2


def test_manifest_names_the_nodes_that_stay_in_higher_precision(precision_bundle: Path) -> None:
    entry = open_bundle(precision_bundle).model("int8-trt")
    model = load(precision_bundle, "int8-trt")
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    float_compute = {n.name for n in model.graph.node if n.op_type in COMPUTE and not set(n.input) & dequantized}
    listed = set(entry.details["higher_precision_nodes"])
    assert listed == float_compute
    assert any(name.endswith("_as_matmul") for name in listed)
    assert set(entry.details["kept_fp32_nodes"]) <= listed
    assert "inputs of Conv/MatMul/Gemm only" in entry.details["qdq_placement"]
