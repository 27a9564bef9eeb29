"""Which integer pairings ONNX Runtime's CPU kernels accelerate here, on the encoder's own MatMul shapes.

One ``MatMulInteger`` per pairing (uint8 x int8, uint8 x uint8, int8 x int8; B a runtime input, so not
prepacked as a constant weight would be) against the fp32 ``MatMul`` of
the same shape, 1 thread, in one process with the repetitions interleaved; figures are giga-operations per
second of the calling thread's CPU time (steady on a shared machine). The shapes are the full-size HTS-AT's
linear layers per stage and one attention P·V (256 windows x heads of 64x64 @ 64x24), the last also in fp32
with subnormal probabilities, with and without flushing them (``edge.model.backends.denormals``); and the
attention's activation x activation products (Q·Kᵀ, P·V per stage shape) as uint8 x int8 with the two
``QuantizeLinear`` they would need, into ``MatMulIntegerToFloat``, against fp32 ``MatMul``.

    python benchmarks/int8_kernels.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.model.backends.denormals import flush_denormals  # noqa: E402
from edge.ops.bench import machine_info  # noqa: E402

LINEAR = ((4096, 96, 384), (4096, 384, 96), (1024, 192, 768), (256, 384, 1536), (256, 1536, 384), (64, 768, 3072))
TYPES = {"u8s8": (TensorProto.UINT8, TensorProto.INT8), "u8u8": (TensorProto.UINT8, TensorProto.UINT8),
         "s8s8": (TensorProto.INT8, TensorProto.INT8), "fp32": (TensorProto.FLOAT, TensorProto.FLOAT)}
NP = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8, TensorProto.FLOAT: np.float32}


def session(a_shape: tuple[int, ...], b_shape: tuple[int, ...], kind: str) -> ort.InferenceSession:
    a_type, b_type = TYPES[kind]
    op, out = ("MatMul", TensorProto.FLOAT) if kind == "fp32" else ("MatMulInteger", TensorProto.INT32)
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", a_type, list(a_shape)),
                               helper.make_tensor_value_info("b", b_type, list(b_shape))],
                              [helper.make_tensor_value_info("y", out, None)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


ATTENTION = ((64, 4), (16, 8), (4, 16))
"""(windows, heads) of the full-size HTS-AT's stages 1-3 at batch 1: 64 tokens per window, head width 24."""


def quantized_attention(a_shape: tuple[int, ...], b_shape: tuple[int, ...], a_zero: int) -> ort.InferenceSession:
    """QuantizeLinear(A) to uint8 and QuantizeLinear(B) to int8, then ``MatMulIntegerToFloat``: what an
    integer Q·Kᵀ or P·V costs in ORT (both operands are activations, quantized per call)."""
    consts = [numpy_helper.from_array(np.array(0.01, np.float32), "sa"),
              numpy_helper.from_array(np.array(a_zero, np.uint8), "za"),
              numpy_helper.from_array(np.array(0.01, np.float32), "sb"),
              numpy_helper.from_array(np.array(0, np.int8), "zb")]
    nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["aq"]),
             helper.make_node("QuantizeLinear", ["b", "sb", "zb"], ["bq"]),
             helper.make_node("MatMulIntegerToFloat", ["aq", "bq", "sa", "sb", "za", "zb"], ["y"],
                              domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape)),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=consts)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def operand(shape: tuple[int, ...], elem: int, rng: np.random.Generator) -> np.ndarray:
    if elem == TensorProto.FLOAT:
        return rng.normal(size=shape).astype(np.float32)
    low, high = (0, 255) if elem == TensorProto.UINT8 else (-127, 127)
    return rng.integers(low, high, shape).astype(NP[elem])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases: dict[str, tuple[Callable[[], object], float, Callable[[], AbstractContextManager[object]]]] = {}
    for m, k, n in LINEAR:
        for kind, (a_type, b_type) in TYPES.items():
            s, a, b = session((m, k), (k, n), kind), operand((m, k), a_type, rng), operand((k, n), b_type, rng)
            cases[f"{m}x{k}x{n} {kind}"] = ((lambda s=s, a=a, b=b: s.run(None, {"a": a, "b": b})),
                                            2.0 * m * k * n, nullcontext)
    p_shape, v_shape = (64, 4, 64, 64), (64, 4, 64, 24)
    probs = rng.random(p_shape).astype(np.float32)
    probs[..., ::4] = np.float32(1e-42)  # what Swin's masked softmax leaves: a quarter subnormal
    values = rng.normal(size=v_shape).astype(np.float32)
    pv = session(p_shape, v_shape, "fp32")
    ops = 2.0 * 64 * 4 * 64 * 64 * 24
    for name, context in (("P·V fp32, subnormal P", nullcontext), ("P·V fp32, subnormal P, flushed", flush_denormals)):
        cases[name] = ((lambda: pv.run(None, {"a": probs, "b": values})), ops, context)
    for windows, heads in ATTENTION:
        q_shape, k_shape, p_shape = (windows, heads, 64, 24), (windows, heads, 24, 64), (windows, heads, 64, 64)
        for product, a_shape, b_shape, a in (
                ("Q·Kᵀ", q_shape, k_shape, rng.normal(size=q_shape)), ("P·V", p_shape, q_shape, rng.random(p_shape))):
            feed = {"a": a.astype(np.float32), "b": rng.normal(size=b_shape).astype(np.float32)}
            ops = 2.0 * windows * heads * 64 * a_shape[-1] * b_shape[-1]
            zero = 128 if product == "Q·Kᵀ" else 0  # Q is signed, P in [0, 1]
            for kind, s in (("fp32", session(a_shape, b_shape, "fp32")),
                            ("u8s8 + 2 Quantize", quantized_attention(a_shape, b_shape, zero))):
                cases[f"attention {windows}x{heads} {product} {kind}"] = (
                    (lambda s=s, feed=feed: s.run(None, feed)), ops, flush_denormals)
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, (run, _, context) in cases.items():
            with context():
                run()
                start = time.thread_time()
                run()
                best[name] = min(best.get(name, np.inf), time.thread_time() - start)
    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; INT8 features: {info['int8_flags']}; ONNX Runtime "
          f"{info['onnxruntime']}; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| M×K×N | fp32 GFLOP/s | u8×s8 GOP/s (× fp32) | u8×u8 (× fp32) | s8×s8 (× fp32) |\n|---|---|---|---|---|")
    for m, k, n in LINEAR:
        rate = {kind: 2.0 * m * k * n / max(best[f"{m}x{k}x{n} {kind}"], 1e-9) / 1e9 for kind in TYPES}
        print(f"| {m}×{k}×{n} | {rate['fp32']:.0f} | " + " | ".join(
            f"{rate[kind]:.0f} ({rate[kind] / rate['fp32']:.1f}×)" for kind in ("u8s8", "u8u8", "s8s8")) + " |")
    for name in [n for n in cases if n.startswith("P·V")]:
        print(f"{name}: {1e3 * best[name]:.2f} ms")
    print("\n| attention product (windows × heads) | fp32 ms | u8×s8 + its 2 Quantize ms (× fp32) |\n|---|---|---|")
    for windows, heads in ATTENTION:
        for product in ("Q·Kᵀ", "P·V"):
            key = f"attention {windows}x{heads} {product}"
            fp32, integer = best[f"{key} fp32"], best[f"{key} u8s8 + 2 Quantize"]
            print(f"| {product} ({windows} × {heads}) | {1e3 * fp32:.2f} | {1e3 * integer:.2f} "
                  f"({fp32 / integer:.2f}×) |")


if __name__ == "__main__":
    main()
