"""Static TensorRT compatibility check: every node of an ONNX graph against the onnx-tensorrt support table.

Source: onnx-tensorrt ``docs/operators.md`` of the ``release/10.3`` branch (JetPack 6's TensorRT 10.3) and
of ``release/10.x`` (10.4-10.13 desktop), transcribed by hand (no network access when this was written);
TensorRT 11's parser keeps the 10.x operator set, its changes are in the builder API
(``edge/backends/trt_api.py``). Only the ops and attribute constraints relevant to exported audio
encoders are modelled in detail; anything not listed counts as unsupported, so the check errs towards
flagging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.errors import ExportError

TRT_TARGETS = ("10.3", "10.x", "11.x")
MAX_OPSET = {"10.3": 20, "10.x": 20, "11.x": 24}
"""Highest ai.onnx opset each parser reads, taking the oldest release of a line: TensorRT 10.0's operators.md
says opsets 9-20 (10.15's says 9-24); TensorRT 11.2's says 9-24."""

_COMMON_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "BlackmanWindow", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear",
    "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather",
    "GatherElements", "GatherND", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU", "HammingWindow", "HannWindow", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "If", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM",
    "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "Pow", "PRelu", "QuantizeLinear",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign", "Round",
    "Scan", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size",
    "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})
SUPPORTED_OPS: dict[str, frozenset[str]] = {
    "10.3": _COMMON_OPS,
    "10.x": _COMMON_OPS | {"AffineGrid", "Gelu"},
    "11.x": _COMMON_OPS | {"AffineGrid", "Gelu"},
}
KNOWN_UNSUPPORTED = {
    "DynamicQuantizeLinear": "dynamic quantization is not supported; use static Q/DQ (quantize --target trt)",
    "MatMulInteger": "integer MatMul (dynamic quantization) is not supported; use static Q/DQ",
    "ConvInteger": "integer Conv (dynamic quantization) is not supported; use static Q/DQ",
    "QLinearConv": "QOperator format is not supported; export Q/DQ (QDQ format)",
    "QLinearMatMul": "QOperator format is not supported; export Q/DQ (QDQ format)",
    "STFT": "STFT is not supported; keep the log-mel frontend outside the graph",
    "DFT": "DFT is not supported; keep the log-mel frontend outside the graph",
    "MelWeightMatrix": "MelWeightMatrix is not supported; keep the log-mel frontend outside the graph",
}
QDQ_INT8 = onnx.TensorProto.INT8
UNSUPPORTED_TENSOR_TYPES = {onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.STRING: "string",
                            onnx.TensorProto.COMPLEX64: "complex64", onnx.TensorProto.COMPLEX128: "complex128"}


@dataclass(frozen=True)
class Incompatibility:
    """One node (or graph-level fact) TensorRT's ONNX parser would reject."""

    node: str
    op_type: str
    reason: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason} [TensorRT {', '.join(self.targets)}]"


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_qdq(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> str | None:
    """TensorRT explicit quantization: int8 with zero point 0 (symmetric), constant scales."""
    if len(node.input) < 3 or not node.input[2]:
        return "no zero point: the default uint8 type is not supported, use int8 with zero point 0"
    if node.input[1] not in constants:
        return "scale is not a constant initializer"
    zero_point = constants.get(node.input[2])
    if zero_point is None:
        return "zero point is not a constant initializer"
    if zero_point.dtype != np.int8:
        return f"{zero_point.dtype} Q/DQ is not supported, only symmetric int8 (quantize --target trt)"
    if np.any(zero_point != 0):
        return "zero point must be 0 (symmetric quantization, quantize --target trt)"
    return None


def _check_pad(node: onnx.NodeProto, _: dict[str, np.ndarray]) -> str | None:
    mode = _attr(node, "mode", "constant")
    return None if mode in ("constant", "reflect", "edge") else f"Pad mode '{mode}' is not supported"


def _check_resize(node: onnx.NodeProto, _: dict[str, np.ndarray]) -> str | None:
    mode = _attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode '{mode}' is not supported (nearest and linear only)"
    if _attr(node, "antialias", 0):
        return "Resize with antialias=1 is not supported"
    return None


def _check_batchnorm(node: onnx.NodeProto, _: dict[str, np.ndarray]) -> str | None:
    return "BatchNormalization in training mode is not supported" if _attr(node, "training_mode", 0) else None


ATTRIBUTE_CHECKS: dict[str, Callable[[onnx.NodeProto, dict[str, np.ndarray]], str | None]] = {
    "QuantizeLinear": _check_qdq,
    "DequantizeLinear": _check_qdq,
    "Pad": _check_pad,
    "Resize": _check_resize,
    "BatchNormalization": _check_batchnorm,
}


def check_model(model: onnx.ModelProto, targets: tuple[str, ...] = TRT_TARGETS) -> list[Incompatibility]:
    """Every node and initializer of ``model`` checked for each TensorRT target; empty list = compatible."""
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    found: dict[tuple[str, str, str], list[str]] = {}

    def flag(node: str, op: str, reason: str, target: str) -> None:
        found.setdefault((node, op, reason), []).append(target)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for init in graph.initializer:
        if init.data_type in UNSUPPORTED_TENSOR_TYPES:
            for target in targets:
                flag(init.name, "initializer", f"{UNSUPPORTED_TENSOR_TYPES[init.data_type]} tensors are not supported",
                     target)
    for node in graph.node:
        name = node.name or f"<unnamed {node.op_type} -> {node.output[0] if node.output else '?'}>"
        for target in targets:
            if opset > MAX_OPSET[target]:
                flag("<graph>", "opset", f"opset {opset} is newer than the parser's {MAX_OPSET[target]}", target)
            if node.domain not in ("", "ai.onnx"):
                flag(name, node.op_type, f"custom domain '{node.domain}' needs a TensorRT plugin", target)
            elif node.op_type in KNOWN_UNSUPPORTED:
                flag(name, node.op_type, KNOWN_UNSUPPORTED[node.op_type], target)
            elif node.op_type not in SUPPORTED_OPS[target]:
                flag(name, node.op_type, "not in the onnx-tensorrt operator table", target)
            elif node.op_type in ATTRIBUTE_CHECKS:
                reason = ATTRIBUTE_CHECKS[node.op_type](node, constants)
                if reason:
                    flag(name, node.op_type, reason, target)
    return [Incompatibility(node, op, reason, tuple(t)) for (node, op, reason), t in found.items()]


def check_file(path: Path, targets: tuple[str, ...] = TRT_TARGETS) -> list[Incompatibility]:
    """:func:`check_model` on a file; an unreadable file is an :class:`ExportError`."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError/OSError/ValueError depending on the damage
        raise ExportError(f"{path} is not a readable ONNX model ({type(e).__name__})",
                          "re-export the bundle with `biolingual-export onnx`") from e
    return check_model(model, targets)


def require_compatible(path: Path, targets: tuple[str, ...] = TRT_TARGETS) -> None:
    """Raise an :class:`ExportError` naming the offending nodes (first five) unless TensorRT accepts ``path``."""
    problems = check_file(path, targets)
    if problems:
        shown = "; ".join(str(p) for p in problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ExportError(f"{path.name} is not TensorRT-compatible: {shown}",
                          "for INT8 use `biolingual-export quantize --target trt` (symmetric Q/DQ)")
