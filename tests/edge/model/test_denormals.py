"""Subnormals are flushed to zero inside the model call, on whichever thread calls it, and nowhere else."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge.model.backends.denormals import flush_denormals, flushing, supported
from edge.model.backends.ort import OrtBackend
from edge.model.bundle import open_bundle

pytestmark = pytest.mark.skipif(not supported(), reason="float mode is set on x86-64 glibc only")
SUBNORMAL = np.float32(1e-42)


def times_one() -> ort.InferenceSession:
    """``y = x * 1``: with denormals-are-zero a subnormal x comes out as 0."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_an_ort_kernel_sees_zero_for_a_subnormal_only_inside_the_block() -> None:
    session = times_one()
    x = np.array([SUBNORMAL, 1.0], np.float32)
    results: dict[str, Any] = {}

    def worker() -> None:  # like the daemon's analysis thread: not the thread that made the session
        results["plain"] = session.run(None, {"x": x})[0]
        with flush_denormals():
            results["inside"] = (flushing(), session.run(None, {"x": x})[0])
        results["after"] = (flushing(), session.run(None, {"x": x})[0], np.float32(SUBNORMAL * np.float32(1)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert results["plain"][0] == SUBNORMAL
    assert results["inside"][0] and results["inside"][1].tolist() == [0.0, 1.0]
    assert results["after"][0] is False and results["after"][1][0] == SUBNORMAL and results["after"][2] == SUBNORMAL


def test_backend_flushes_during_its_call_and_leaves_the_creating_thread_ieee(tiny_bundle: Path) -> None:
    assert not flushing()
    backend = OrtBackend(open_bundle(tiny_bundle), threads=1)
    assert not flushing(), "ORT's set_denormal_as_zero leaked into the thread that created the session"
    seen: list[bool] = []
    real = backend._session

    class Recording:
        def run(self, *args: Any) -> Any:
            seen.append(flushing())
            return real.run(*args)

    backend._session = Recording()  # type: ignore[assignment]
    params = open_bundle(tiny_bundle).manifest.frontend
    out = backend.embed(np.zeros((1, 1, params.n_frames, params.n_mels), np.float32))
    assert seen == [True] and np.isfinite(out).all() and not flushing()
