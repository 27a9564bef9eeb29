"""Cosines of float16 archive rows against float32 query vectors, without a float16->float32 copy in numpy.

numpy converts float16 one value at a time (about 8 ns a value here); ONNX Runtime's Cast uses the CPU's
half-precision instructions, and the same graph returns the row norms, so a scan of a shard is one call.
Falls back to numpy where the ``onnx`` package (to build the graph) is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 18
"""ReduceSumSquare takes its axes as an input from opset 18."""
IR_VERSION = 8
_session: Any = None


def _build_session() -> Any:
    """``x`` (N, D) float16, ``q`` (D, K) float32 -> ``y`` = x·q (N, K), ``n`` = |x|² (N, 1), float32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", "d"]),
              helper.make_tensor_value_info("q", TensorProto.FLOAT, ["d", "k"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"]),
               helper.make_tensor_value_info("n", TensorProto.FLOAT, ["n", 1])]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "q"], ["y"]),
             helper.make_node("ReduceSumSquare", ["xf", "axes"], ["n"], keepdims=1)]
    model = helper.make_model(helper.make_graph(nodes, "half_matmul", inputs, outputs, [axes]),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def cosines(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``rows`` (N, D) float16/float32 (any norm) × ``queries`` (D, K) float32 (unit) -> (N, K) float32 cosines."""
    global _session
    if rows.dtype == np.float16:
        if _session is None:
            try:
                _session = _build_session()
            except ImportError:
                _session = False
        if _session is not False:
            dots, squares = _session.run(None, {"x": np.ascontiguousarray(rows),
                                                "q": np.ascontiguousarray(queries, np.float32)})
            return dots / np.sqrt(np.maximum(squares, np.finfo(np.float32).tiny))
    full = rows.astype(np.float32)
    squares = np.einsum("ij,ij->i", full, full)[:, None]
    return (full @ queries) / np.sqrt(np.maximum(squares, np.finfo(np.float32).tiny))
