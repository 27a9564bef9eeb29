"""INT8 as explicit Q/DQ ONNX via ONNX Runtime static quantization, calibrated on runtime log-mel features.

Two flavours from one fp32 graph, each shaped by what its runtime's integer kernels do:

* ``ort``: uint8 activations x int8 per-channel weights, the one pairing ONNX Runtime's x86 kernels run on
  VNNI/AMX (and ARM's on its dot-product instructions). Only the weight MatMul/Gemm are quantized, on the
  *inputs* only, from the graph after ONNX Runtime's transformer fusions (:func:`export.optimize.transformer_fused`):
  each becomes one ``MatMulIntegerToFloat`` (integer product, float out), and GELU/LayerNorm stay fused
  float ops between them; :mod:`export.int8_fuse` then writes each as that op with its bias ``Add`` inside
  (one float pass less per linear layer). The attention's activation x activation MatMuls (Q·Kᵀ, P·V) stay
  in float: as uint8 x uint8 they get no integer speed-up at all (measured 1.1x fp32 on AVX-512 VNNI + AMX vs 6x for
  uint8 x int8) and cost a quantize/dequantize each. Measured by ``benchmarks/precision_cpu.py``.
* ``trt``: symmetric int8 activations and weights, zero points 0, Q/DQ on the *inputs* of Conv/MatMul/Gemm
  only, as TensorRT's Q/DQ placement guidance asks (it fuses DQ -> op -> Q itself and picks int8 or float
  for everything in between), from the standard exported graph.

Sensitive groups of nodes can be kept in fp32 by name. The exact bicubic-stretch MatMul (``*_as_matmul``,
see :mod:`export.optimize`) is never quantized: its constant is the first operand, where a per-channel
scale would run along the contraction axis, and it is an exact interpolation, not a learnt weight.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from calibration.dataset import CalibrationSet
from export.errors import ExportError
from export.int8_fuse import fuse_integer_matmuls
from export.optimize import transformer_fused

log = logging.getLogger(__name__)

TARGETS = ("ort", "trt")
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
OP_TYPES = {"ort": ("MatMul", "Gemm"), "trt": QUANTIZED_OP_TYPES}
"""Op types quantized per target (the ORT patch-embedding Conv is one small layer: float)."""
ALWAYS_FLOAT = {"ort": ("attention",), "trt": ()}
"""Groups kept in float for speed whatever ``keep_fp32`` says (uint8 x uint8 MatMuls are not accelerated)."""
SENSITIVE_GROUPS = ("patch_embed", "head", "softmax", "attention")
"""``patch_embed``: the patch-embedding Conv; ``head``: MatMul/Gemm after the last LayerNormalization
(final norm + projection); ``softmax``: MatMuls fed by a Softmax (attention probabilities × V);
``attention``: every activation × activation MatMul (Q·Kᵀ and P·V)."""
DEFAULT_KEEP_FP32 = ("head",)
"""Measured on the trained tiny model: keeping the projection head in fp32 cuts the max abs error ~3x;
the patch embedding, softmax and attention groups gave no measurable gain."""
CALIBRATION_METHODS = ("minmax", "percentile")
QDQ_PLACEMENT = {"ort": "inputs of weight MatMul/Gemm only, after transformer fusions (ONNX Runtime QDQ)",
                 "trt": "inputs of Conv/MatMul/Gemm only (TensorRT placement)"}
EXACT_MATMUL_SUFFIX = "_as_matmul"
"""Name suffix of the exact interpolation MatMuls written by :func:`export.optimize.resize_to_matmul`."""


@dataclass(frozen=True)
class Int8Options:
    target: str = "ort"
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    calibration_method: str = "minmax"
    batch: int = 8


class _Reader:
    """ONNX Runtime ``CalibrationDataReader`` over a :class:`CalibrationSet` (re-iterable via ``rewind``)."""

    def __init__(self, data: CalibrationSet, batch: int) -> None:
        self._data, self._batch = data, batch
        self._feeds: Iterator[dict[str, Any]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:
        # Only full batches: the histogram calibrators stack per-batch arrays and need equal shapes.
        self._feeds = (f for f in self._data.feeds(self._batch) if f[self._data.input_name].shape[0] == self._batch)



def _is_initializer(graph: onnx.GraphProto, name: str) -> bool:
    return any(i.name == name for i in graph.initializer)


def sensitive_nodes(model: onnx.ModelProto, groups: tuple[str, ...]) -> list[str]:
    """Names of the nodes in the requested :data:`SENSITIVE_GROUPS` (graph in topological order)."""
    unknown = [g for g in groups if g not in SENSITIVE_GROUPS]
    if unknown:
        raise ExportError(f"unknown node group(s) {', '.join(unknown)}", f"choose from {', '.join(SENSITIVE_GROUPS)}")
    graph = model.graph
    nodes = list(graph.node)
    producer = {out: n for n in nodes for out in n.output}
    names: list[str] = []
    if "patch_embed" in groups:
        names += [n.name for n in nodes if n.op_type == "Conv"]
    if "head" in groups:
        last_norm = max((i for i, n in enumerate(nodes) if n.op_type == "LayerNormalization"), default=-1)
        names += [n.name for n in nodes[last_norm + 1 :] if n.op_type in ("MatMul", "Gemm")]
    for n in nodes:
        if n.op_type != "MatMul":
            continue
        fed_by_softmax = any(producer.get(i) is not None and producer[i].op_type == "Softmax" for i in n.input)
        two_activations = not any(_is_initializer(graph, i) for i in n.input)
        if ("softmax" in groups and fed_by_softmax) or ("attention" in groups and two_activations):
            names.append(n.name)
    return sorted(set(names), key=[n.name for n in nodes].index)


def exact_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the ``*_as_matmul`` interpolation MatMuls (never quantized)."""
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith(EXACT_MATMUL_SUFFIX)]


def higher_precision_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/MatMul/Gemm nodes of a Q/DQ model with no dequantized input: they run in float (fp32/fp16).

    Every other operator (LayerNorm, Softmax, GELU, adds …) also computes in float; TensorRT may run it in
    int8 only where it fuses it into a quantized Conv/MatMul.
    """
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in model.graph.node
            if n.op_type in QUANTIZED_OP_TYPES and not set(n.input) & dequantized]


def quantize_int8(fp32_path: Path, out_path: Path, data: CalibrationSet, options: Int8Options) -> list[str]:
    """Write a Q/DQ INT8 model for ``options.target``; returns the node names excluded from quantization
    (the requested sensitive groups and the exact interpolation MatMuls)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if options.target not in TARGETS:
        raise ExportError(f"unknown INT8 target '{options.target}'", f"choose one of: {', '.join(TARGETS)}")
    if options.calibration_method not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration method '{options.calibration_method}'",
                          f"choose one of: {', '.join(CALIBRATION_METHODS)}")
    data.require(options.batch)
    symmetric = options.target == "trt"
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="biolingual-int8-") as tmp:
        source, prepared = fp32_path, Path(tmp) / "prepared.onnx"
        if options.target == "ort":
            source = Path(tmp) / "fused.onnx"
            onnx.save(transformer_fused(onnx.load(str(fp32_path)), (2, *data.features.shape[1:])).model, str(source))
        # Symbolic shape inference crashes on the dynamo-exported graph; ONNX shape inference suffices.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True,
                          skip_optimization=options.target == "ort")
        prepared_model = onnx.load(str(prepared))
        groups = tuple(dict.fromkeys(options.keep_fp32 + ALWAYS_FLOAT[options.target]))
        excluded = sensitive_nodes(prepared_model, groups) + exact_matmuls(prepared_model)
        op_types = list(OP_TYPES[options.target])
        quantize_static(
            str(prepared), str(out_path), _Reader(data, options.batch),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=op_types, nodes_to_exclude=excluded,
            calibrate_method=method[options.calibration_method],
            # TensorRT takes float biases (it fuses them itself); int32 bias Q/DQ is for ORT's kernels.
            # Q/DQ on the inputs only: TensorRT's placement; for ORT a float-out integer MatMul.
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric,
                           "OpTypesToExcludeOutputQuantization": op_types},
        )
    if options.target == "ort":
        model, fused = fuse_integer_matmuls(onnx.load(str(out_path)))
        onnx.save(model, str(out_path))
        log.info("%d weight MatMul(s) written as MatMulIntegerToFloat with their bias", fused)
    log.info("INT8 (%s) written to %s; %d node(s) kept in fp32", options.target, out_path, len(excluded))
    return excluded
