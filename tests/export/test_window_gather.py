"""Swin's window partition chains (reshape, pad, cyclic shift, transpose) become one exact Gather each."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.window_gather import windows_as_gather

CHANNELS = 3


def const(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def partition_graph(pad: int = 0) -> onnx.ModelProto:
    """x (B, 16, C) tokens of a 4x4 grid -> shift by one -> 2x2 windows (B*4, 4, C) -> MatMul."""
    side = 4 + pad
    inits = [const("grid", [-1, 4, 4, CHANNELS]), const("pads", [0, 0, 0, 0, 0, pad, pad, 0]),
             const("s0", [0]), const("s1", [1]), const("end", [side]), const("ax1", [1]), const("ax2", [2]),
             const("win6", [-1, side // 2, 2, side // 2, 2, CHANNELS]), const("win3", [-1, 4, CHANNELS]),
             numpy_helper.from_array(np.eye(CHANNELS, 2, dtype=np.float32), "w")]
    nodes = [helper.make_node("Reshape", ["x", "grid"], ["g"]),
             helper.make_node("Pad", ["g", "pads"], ["p"]),
             helper.make_node("Slice", ["p", "s1", "end", "ax1"], ["h_tail"]),
             helper.make_node("Slice", ["p", "s0", "s1", "ax1"], ["h_head"]),
             helper.make_node("Concat", ["h_tail", "h_head"], ["h"], axis=1),
             helper.make_node("Slice", ["h", "s1", "end", "ax2"], ["w_tail"]),
             helper.make_node("Slice", ["h", "s0", "s1", "ax2"], ["w_head"]),
             helper.make_node("Concat", ["w_tail", "w_head"], ["rolled"], axis=2),
             helper.make_node("Reshape", ["rolled", "win6"], ["split"]),
             helper.make_node("Transpose", ["split"], ["windows6"], perm=[0, 1, 3, 2, 4, 5]),
             helper.make_node("Reshape", ["windows6", "win3"], ["windows"]),
             helper.make_node("MatMul", ["windows", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16,
                                                                                                   CHANNELS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_shifted_window_partition_becomes_one_gather_with_identical_answers() -> None:
    model, count = windows_as_gather(partition_graph(), (1, 16, CHANNELS))
    assert count == 1
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Gather", "Reshape", "MatMul"]
    for batch in (1, 3):
        x = np.random.default_rng(batch).normal(size=(batch, 16, CHANNELS)).astype(np.float32)
        np.testing.assert_array_equal(run(model, x), run(partition_graph(), x))


def test_a_chain_that_pads_is_not_a_permutation_and_stays() -> None:
    model, count = windows_as_gather(partition_graph(pad=2), (1, 16, CHANNELS))
    assert count == 0
    assert "Pad" in {n.op_type for n in model.graph.node}
    x = np.ones((2, 16, CHANNELS), np.float32)
    np.testing.assert_array_equal(run(model, x), run(partition_graph(pad=2), x))
