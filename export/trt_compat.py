"""Static TensorRT compatibility check: every node of an ONNX graph against onnx-tensorrt's support table.

The table is data (``trt_operators.json`` beside this module): one row per operator and TensorRT version,
transcribed from onnx-tensorrt's ``docs/operators.md`` of that release, each row naming its source, with the
row's restrictions in machine-checked form (``checks``). This module only interprets the rows: an operator
without a row, or with ``supported: false``, is rejected; each check kind below tests one restriction.

``biolingual-export trt`` checks against the installed TensorRT's table (:func:`target_for_version`); the
quantizer and CI check against every target in :data:`TRT_TARGETS`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from export.errors import ExportError

TABLE_FILE = Path(__file__).with_name("trt_operators.json")
TRT_TARGETS = ("10.3", "10.15", "11.x")
"""JetPack 6's TensorRT 10.3, the newest 10.x table, and TensorRT 11."""
OLDEST_TARGET = TRT_TARGETS[0]
KNOWN_UNSUPPORTED = {
    "DynamicQuantizeLinear": "dynamic quantization is not supported; use static Q/DQ (quantize --target trt)",
    "MatMulInteger": "integer MatMul (dynamic quantization) is not supported; use static Q/DQ",
    "ConvInteger": "integer Conv (dynamic quantization) is not supported; use static Q/DQ",
    "QLinearConv": "QOperator format is not supported; export Q/DQ (QDQ format)",
    "QLinearMatMul": "QOperator format is not supported; export Q/DQ (QDQ format)",
    "DFT": "DFT is not supported; keep the log-mel frontend outside the graph",
    "MelWeightMatrix": "MelWeightMatrix is not supported; keep the log-mel frontend outside the graph",
}
"""Unsupported operators that have a known fix, with that fix as the reason."""
UNSUPPORTED_TENSOR_TYPES = {onnx.TensorProto.STRING: "string", onnx.TensorProto.COMPLEX64: "complex64",
                            onnx.TensorProto.COMPLEX128: "complex128"}
_VERSION = re.compile(r"^(\d+)\.(\d+)")


@dataclass(frozen=True)
class OperatorRow:
    """One operator on one TensorRT version, as onnx-tensorrt's operator table gives it."""

    op: str
    tensorrt: str
    supported: bool
    types: str
    restrictions: str
    checks: tuple[Mapping[str, Any], ...]
    source: str


@dataclass(frozen=True)
class Incompatibility:
    """One node (or graph-level fact) TensorRT's ONNX parser would reject."""

    node: str
    op_type: str
    reason: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason} [TensorRT {', '.join(self.targets)}]"


@lru_cache(maxsize=1)
def _table() -> tuple[dict[tuple[str, str], OperatorRow], dict[str, int]]:
    raw = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    rows = {(r["tensorrt"], r["op"]): OperatorRow(r["op"], r["tensorrt"], r["supported"], r["types"],
                                                  r["restrictions"], tuple(r["checks"]), r["source"])
            for r in raw["rows"]}
    return rows, {target: int(v["max"]) for target, v in raw["opset"].items()}


def operator_row(op: str, target: str) -> OperatorRow | None:
    """The table row of ``op`` on ``target``, or None when the table does not list the operator."""
    return _table()[0].get((target, op))


def max_opset(target: str) -> int:
    """Highest ai.onnx opset the parser of ``target`` reads."""
    return _table()[1][target]


def target_for_version(version: str) -> str:
    """The table to check an installed TensorRT against: the newest target not newer than ``version``.

    10.4-10.14 use the 10.3 table (conservative: an operator added in between is flagged, never let through).
    """
    match = _VERSION.match(version)
    if match is None:
        raise ExportError(f"cannot read the TensorRT version '{version}'", "report the output of `import tensorrt`")
    major, minor = int(match[1]), int(match[2])
    if major >= 11:
        return "11.x"
    if (major, minor) >= (10, 15):
        return "10.15"
    if (major, minor) >= (10, 3):
        return "10.3"
    raise ExportError(f"TensorRT {version} is older than {OLDEST_TARGET}, the oldest this exporter checks against",
                      "use JetPack 6 (TensorRT 10.3) or newer")


@dataclass(frozen=True)
class _Graph:
    """What the checks need to know about the whole graph."""

    constants: dict[str, np.ndarray]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
    shapes: dict[str, list[int | None]]


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _constant_input(node: onnx.NodeProto, check: Mapping[str, Any], graph: _Graph) -> str | None:
    name = _input(node, int(check["index"]))
    if name and name not in graph.constants:
        return f"input `{check['name']}` must be an initializer (a build-time constant)"
    return None


def _attribute_in(node: onnx.NodeProto, check: Mapping[str, Any], _: _Graph) -> str | None:
    value = _attr(node, str(check["name"]), check["default"])
    if value not in check["allowed"]:
        allowed = ", ".join(str(a) for a in check["allowed"])
        return f"{check['name']}={value!s} is not supported (supported: {allowed})"
    return None


def _attribute_absent(node: onnx.NodeProto, check: Mapping[str, Any], _: _Graph) -> str | None:
    present = [a.name for a in node.attribute if a.name in check["names"]]
    return f"attribute {present[0]} is not supported" if present else None


def _first_output_only(node: onnx.NodeProto, _: Mapping[str, Any], __: _Graph) -> str | None:
    used = [o for o in node.output[1:] if o]
    return f"only the first output is supported ({used[0]} is used)" if used else None


def _real_input(node: onnx.NodeProto, _: Mapping[str, Any], graph: _Graph) -> str | None:
    shape = graph.shapes.get(_input(node, 0))
    if shape and shape[-1] == 2:
        return "complex-valued input (last dimension 2) is not supported; pass a real signal (last dimension 1)"
    return None


def _per_axis_rule(consumer: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The axis TensorRT accepts for a per-channel weight at ``consumer``'s input ``index`` (None: no rule)."""
    if consumer.op_type == "Conv" and index == 1:
        return 0
    if consumer.op_type == "MatMul":
        return rank - 1 if index == 1 else rank - 2
    if consumer.op_type == "Gemm" and index == 1:
        return 0 if _attr(consumer, "transB", 0) else 1
    return None


def _qdq(node: onnx.NodeProto, _: Mapping[str, Any], graph: _Graph) -> str | None:
    """Explicit quantization: int8 with zero point 0, constant scales, per-channel only on weights and only
    along the output-channel axis (TensorRT's Q/DQ rules)."""
    zero_name, scale_name, x_name = _input(node, 2), _input(node, 1), _input(node, 0)
    if not zero_name:
        return "no zero point: the default uint8 type is not supported, use int8 with zero point 0"
    if scale_name not in graph.constants:
        return "scale is not a constant initializer"
    zero_point = graph.constants.get(zero_name)
    if zero_point is None:
        return "zero point is not a constant initializer"
    if zero_point.dtype != np.int8:
        return f"{zero_point.dtype} Q/DQ is not supported, only symmetric int8 (quantize --target trt)"
    if np.any(zero_point != 0):
        return "zero point must be 0 (symmetric quantization, quantize --target trt)"
    if graph.constants[scale_name].size <= 1:
        return None
    weights = graph.constants.get(x_name)
    if weights is None:
        return "per-channel scales on an activation are not supported (per-tensor only; per-channel is for weights)"
    rank = weights.ndim
    axis = int(_attr(node, "axis", 1))  # type: ignore[call-overload]
    axis = axis + rank if axis < 0 else axis
    if node.op_type != "DequantizeLinear":
        return None
    for consumer, index in graph.consumers.get(node.output[0], []):
        wanted = _per_axis_rule(consumer, index, rank)
        if wanted is not None and axis != wanted:
            return (f"per-channel axis {axis} feeds {consumer.op_type} {consumer.name or '?'} input {index} along "
                    f"its contraction axis; TensorRT needs the output-channel axis {wanted}")
    return None


CHECKS: dict[str, Callable[[onnx.NodeProto, Mapping[str, Any], _Graph], str | None]] = {
    "constant_input": _constant_input,
    "attribute_in": _attribute_in,
    "attribute_absent": _attribute_absent,
    "first_output_only": _first_output_only,
    "real_input": _real_input,
    "qdq": _qdq,
}
"""Check kind (the ``kind`` of a row's ``checks`` entry) -> function returning the reason it fails, or None."""


def _graph_facts(model: onnx.ModelProto) -> _Graph:
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.value_info, *graph.output]}
    return _Graph(constants, consumers, shapes)


def _first_supported(op: str) -> str | None:
    return next((t for t in TRT_TARGETS if (row := operator_row(op, t)) is not None and row.supported), None)


def node_problem(node: onnx.NodeProto, target: str, graph: _Graph) -> str | None:
    """Why ``target``'s parser rejects ``node``, or None."""
    if node.domain not in ("", "ai.onnx"):
        return f"custom domain '{node.domain}' needs a TensorRT plugin"
    row = operator_row(node.op_type, target)
    if row is None or not row.supported:
        if node.op_type in KNOWN_UNSUPPORTED:
            return KNOWN_UNSUPPORTED[node.op_type]
        later = _first_supported(node.op_type)
        if later is not None and TRT_TARGETS.index(later) > TRT_TARGETS.index(target):
            return f"not supported by TensorRT {target}'s ONNX parser (supported in the {later} table)"
        return "not supported by TensorRT's ONNX parser (onnx-tensorrt operators.md)" if row else \
            "not in the onnx-tensorrt operator table"
    for check in row.checks:
        reason = CHECKS[str(check["kind"])](node, check, graph)
        if reason:
            return reason
    return None


def check_model(model: onnx.ModelProto, targets: Sequence[str] = TRT_TARGETS) -> list[Incompatibility]:
    """Every node and initializer of ``model`` checked for each TensorRT target; empty list = compatible."""
    unknown = [t for t in targets if t not in TRT_TARGETS]
    if unknown:
        raise ExportError(f"no operator table for TensorRT {', '.join(unknown)}",
                          f"choose from {', '.join(TRT_TARGETS)}")
    graph = model.graph
    if any(n.op_type == "STFT" for n in graph.node):
        with contextlib.suppress(Exception):  # shapes only refine the STFT check; without them it is skipped
            model = onnx.shape_inference.infer_shapes(model)
    facts = _graph_facts(model)
    found: dict[tuple[str, str, str], list[str]] = {}

    def flag(node: str, op: str, reason: str, target: str) -> None:
        found.setdefault((node, op, reason), []).append(target)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for target in targets:
        if opset > max_opset(target):
            flag("<graph>", "opset", f"opset {opset} is newer than the parser's {max_opset(target)}", target)
        for init in graph.initializer:
            if init.data_type in UNSUPPORTED_TENSOR_TYPES:
                flag(init.name, "initializer", f"{UNSUPPORTED_TENSOR_TYPES[init.data_type]} tensors are not supported",
                     target)
        for node in graph.node:
            reason = node_problem(node, target, facts)
            if reason:
                name = node.name or f"<unnamed {node.op_type} -> {node.output[0] if node.output else '?'}>"
                flag(name, node.op_type, reason, target)
    return [Incompatibility(node, op, reason, tuple(t)) for (node, op, reason), t in found.items()]


def check_file(path: Path, targets: Sequence[str] = TRT_TARGETS) -> list[Incompatibility]:
    """:func:`check_model` on a file; an unreadable file is an :class:`ExportError`."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError/OSError/ValueError depending on the damage
        raise ExportError(f"{path} is not a readable ONNX model ({type(e).__name__})",
                          "re-export the bundle with `biolingual-export onnx`") from e
    return check_model(model, targets)


def require_compatible(path: Path, targets: Sequence[str] = TRT_TARGETS) -> None:
    """Raise an :class:`ExportError` naming the offending nodes (first five) unless TensorRT accepts ``path``."""
    problems = check_file(path, targets)
    if problems:
        shown = "; ".join(str(p) for p in problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ExportError(f"{path.name} is not TensorRT-compatible: {shown}",
                          "for INT8 use `biolingual-export quantize --target trt` (symmetric Q/DQ)")
