"""``biolingual-export quantize``: add an FP16 or calibrated INT8 encoder to a bundle, with its parity numbers.

``int8`` (target ``ort``: uint8 activations, what ONNX Runtime's CPU kernels speed up) and ``int8-trt``
(target ``trt``: symmetric int8 Q/DQ, what TensorRT builds) are separate files and manifest entries;
``fp16`` serves both runtimes. Parity is measured against ORT fp32 on calibration windows held out from
calibration; ``biolingual-export verify`` gives the gated report on recordings of your choice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from calibration.dataset import DEFAULT_BATCH, CalibrationSet
from edge.model.backends.int8_path import keep_int8_exact
from edge.model.bundle import ModelEntry, open_bundle, sha256_file, write_manifest
from export.errors import ExportError
from export.fidelity import Fidelity, bundle_label_embeddings, fidelity
from export.fp16 import convert_fp16
from export.int8 import DEFAULT_KEEP_FP32, QDQ_PLACEMENT, Int8Options, higher_precision_nodes, quantize_int8
from export.trt_compat import KNOWN_UNSUPPORTED, check_file

PRECISIONS = ("int8", "fp16")
MODEL_FILES = {"fp16": "audio_encoder.fp16.onnx", "int8": "audio_encoder.int8.qdq.onnx",
               "int8-trt": "audio_encoder.int8-trt.qdq.onnx"}
HOLDOUT_EVERY = 5
"""Every 5th calibration window is kept out of calibration and used for the parity numbers."""
PARITY_BATCH = 16


@dataclass(frozen=True)
class QuantizeOptions:
    precision: str = "int8"
    target: str = "ort"
    """``ort`` or ``trt``: which runtime the INT8 file is for (FP16 serves both)."""
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    calibration_method: str = "minmax"
    batch: int = DEFAULT_BATCH


def model_key(precision: str, target: str) -> str:
    """Manifest key of a precision variant: ``fp16``, ``int8`` (ORT) or ``int8-trt``."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}")
    return "int8-trt" if precision == "int8" and target == "trt" else precision


def ort_session(path: Path, precision: str = "fp32") -> ort.InferenceSession:
    """A CPU session of ``path``; an INT8 model's takes the integer path the unit's does (exact u8×u8 on x86
    without VNNI: edge/model/backends/int8_path.py), so the gates measure what a unit computes."""
    options = ort.SessionOptions()
    if precision == "int8":
        keep_int8_exact(options)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises untyped errors for corrupt or unsupported graphs
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {str(e).splitlines()[0]}",
                          "re-export the bundle with `biolingual-export onnx`") from e


def embed_all(session: ort.InferenceSession, features: np.ndarray, batch: int = PARITY_BATCH) -> np.ndarray:
    """``(N, 1, T, M)`` features -> ``(N, D)`` embeddings, ``batch`` windows per call."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: features[i : i + batch]})[0]
                           for i in range(0, features.shape[0], batch)])


def _forbidden_for_ort(path: Path) -> list[str]:
    return [f"{n.name} ({n.op_type})" for n in onnx.load(str(path)).graph.node if n.op_type in KNOWN_UNSUPPORTED
            and n.op_type not in ("DFT", "MelWeightMatrix")]


def add_precision(bundle_dir: Path, calibration: CalibrationSet | None, options: QuantizeOptions) -> ModelEntry:
    """Write the variant next to the fp32 file, measure it, and register it in the manifest."""
    bundle = open_bundle(bundle_dir)
    fp32 = bundle.model("fp32")
    fp32_path = bundle.root / fp32.path
    reference = ort_session(fp32_path)
    key = model_key(options.precision, options.target)
    out_path = bundle.root / MODEL_FILES[key]
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    details: dict[str, object] = {"source_fp32_sha256": bundle.manifest.files[fp32.path]}
    held_out = calibration
    try:
        if options.precision == "int8":
            if calibration is None:
                raise ExportError("INT8 needs calibration data", "pass --calibration DIR (see `calibrate`)")
            calibrate, held_out = calibration.split(HOLDOUT_EVERY)
            kept = quantize_int8(fp32_path, tmp_path, calibrate, Int8Options(
                target=options.target, keep_fp32=options.keep_fp32,
                calibration_method=options.calibration_method, batch=options.batch))
            details.update(target=options.target, kept_fp32_groups=list(options.keep_fp32), kept_fp32_nodes=kept,
                           higher_precision_nodes=higher_precision_nodes(onnx.load(str(tmp_path))),
                           qdq_placement=QDQ_PLACEMENT[options.target],
                           calibration_method=options.calibration_method,
                           calibration={"windows": len(calibrate), "seed": calibration.seed})
        else:
            convert_fp16(fp32_path, tmp_path)
        forbidden = _forbidden_for_ort(tmp_path)
        if forbidden:
            raise ExportError(f"{key} graph has dynamic-quantization ops: {', '.join(forbidden[:5])}",
                              "this is a bug in the quantizer settings; report it")
        candidate = ort_session(tmp_path, options.precision)
        trt_problems = check_file(tmp_path)
        if key == "int8-trt" and trt_problems:
            raise ExportError(f"{key} graph is not TensorRT-compatible: {trt_problems[0]}",
                              "report it; the symmetric Q/DQ settings should avoid this")
        details["trt_compatible"] = not trt_problems
        if held_out is not None and len(held_out):
            labels = bundle_label_embeddings(bundle)
            result: Fidelity = fidelity(embed_all(reference, held_out.features),
                                        embed_all(candidate, held_out.features), labels)
            details["parity_vs_fp32"] = {**asdict(result), "data": "held-out calibration windows"}
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    entry = ModelEntry(path=out_path.name, precision=options.precision, runtime="onnxruntime", inputs=fp32.inputs,
                       outputs=fp32.outputs, opset=fp32.opset, details=details)
    models = {**bundle.manifest.models, key: entry}
    write_manifest(bundle.root, dataclasses.replace(bundle.manifest, models=models))
    logging.getLogger(__name__).info("%s added to %s (sha256 %s)", key, bundle.root, sha256_file(out_path)[:12])
    return entry
