"""The ORT INT8 graph's weight MatMuls are written as MatMulIntegerToFloat with the bias inside the kernel:
same answers as the Q/DQ chain ONNX Runtime would fuse itself, one float Add less per linear layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge.model.bundle import open_bundle
from export.int8_fuse import fuse_integer_matmuls


def qdq_linear(bias_first: bool = False, bias_gelu: bool = False) -> onnx.ModelProto:
    """x (1, 6, 8) -> Q/DQ (u8) -> MatMul with a per-column s8 weight (8, 5) -> + bias -> Relu
    (``bias_gelu``: -> BiasGelu(·, bias), as ONNX Runtime's transformer fusions write an MLP's first layer)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.05), "x_scale"), numpy_helper.from_array(np.uint8(128), "x_zero"),
             numpy_helper.from_array(rng.integers(-127, 127, (8, 5)).astype(np.int8), "w_q"),
             numpy_helper.from_array(rng.uniform(0.01, 0.02, 5).astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(5, np.int8), "w_zero"),
             numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "bias")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=1),
             helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="linear")]
    nodes += [helper.make_node("BiasGelu", ["y", "bias"], ["out"], domain="com.microsoft")] if bias_gelu else [
        helper.make_node("Add", ["bias", "y"] if bias_first else ["y", "bias"], ["z"]),
        helper.make_node("Relu", ["z"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_bias_moves_into_the_integer_matmul_with_the_same_answers() -> None:
    x = np.random.default_rng(1).normal(size=(1, 6, 8)).astype(np.float32)
    for bias_first in (False, True):
        original = qdq_linear(bias_first)
        expected = run(original, x)
        fused, count = fuse_integer_matmuls(qdq_linear(bias_first))
        ops = [n.op_type for n in fused.graph.node]
        assert count == 1 and ops == ["QuantizeLinear", "MatMulIntegerToFloat", "Relu"]
        assert list(fused.graph.node[1].input)[-1] == "bias"
        assert {i.name for i in fused.graph.initializer} == {"x_scale", "x_zero", "w_q", "w_scale", "w_zero", "bias"}
        np.testing.assert_allclose(run(fused, x), expected, atol=1e-6)


def test_bias_of_a_bias_gelu_moves_into_the_integer_matmul_leaving_a_plain_gelu() -> None:
    x = np.random.default_rng(2).normal(size=(1, 6, 8)).astype(np.float32)
    expected = run(qdq_linear(bias_gelu=True), x)
    fused, count = fuse_integer_matmuls(qdq_linear(bias_gelu=True))
    assert count == 1 and [n.op_type for n in fused.graph.node] == ["QuantizeLinear", "MatMulIntegerToFloat", "Gelu"]
    assert list(fused.graph.node[1].input)[-1] == "bias" and fused.graph.node[2].domain == "com.microsoft"
    np.testing.assert_allclose(run(fused, x), expected, atol=1e-6)


def test_matmul_feeding_an_output_or_two_readers_keeps_its_add_outside() -> None:
    model = qdq_linear()
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5]))
    fused, count = fuse_integer_matmuls(model)
    assert count == 1 and [n.op_type for n in fused.graph.node].count("Add") == 1
    x = np.ones((1, 6, 8), np.float32)
    np.testing.assert_allclose(run(fused, x), run(qdq_linear(), x), atol=1e-6)


def test_float_matmul_is_left_alone() -> None:
    model = qdq_linear()
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    matmul.input[0] = "x"  # activation not quantized: stays a float MatMul
    _, count = fuse_integer_matmuls(model)
    assert count == 0


def test_ort_int8_bundle_has_no_bias_add_after_an_integer_matmul(precision_bundle: Path) -> None:
    model = onnx.load(str(precision_bundle / open_bundle(precision_bundle).model("int8").path))
    integer = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert integer and any(len(n.input) == 7 for n in integer)
    constants = {i.name: i for i in model.graph.initializer}
    fed_by_integer = {n.output[0] for n in integer}
    bias_adds = [n.name for n in model.graph.node if n.op_type == "Add" and set(n.input) & fed_by_integer
                 and any(i in constants and len(constants[i].dims) == 1 for i in n.input)]
    assert bias_adds == [] and "BiasGelu" not in {n.op_type for n in model.graph.node}
    weight_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and any(i in constants for i in n.input)
                      and not n.name.endswith("_as_matmul")]
    head = set(open_bundle(precision_bundle).model("int8").details["kept_fp32_nodes"])
    assert {n.name for n in weight_matmuls} <= head
