"""``biolingual-export verify``: every model in the bundle against ORT fp32 (and ORT fp32 against torch),
stage by stage on real recordings, gated and written to ``parity.json`` (what ``edge`` checks before use)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.audio.files import find_audio_files, read_file
from edge.audio.windowing import clip_windows
from edge.errors import AudioError, EdgeError
from edge.model.bundle import Bundle, open_bundle, write_manifest
from edge.model.frontend import LogMelFrontend
from export.errors import ExportError
from export.fidelity import Fidelity, bundle_label_embeddings, fidelity, gates_for
from export.parity import FP32_MAX_ABS, FP32_MIN_COSINE, write_report
from export.quantize import embed_all, ort_session

DEFAULT_MAX_WINDOWS = 256
TORCH_STAGE = "torch_fp32->ort_fp32"


@dataclass(frozen=True)
class StageResult:
    stage: str
    model_key: str
    passed: bool
    fidelity: Fidelity | None
    note: str = ""


def audio_features(paths: list[Path], bundle: Bundle, max_windows: int = DEFAULT_MAX_WINDOWS) -> np.ndarray:
    """Consecutive non-overlapping windows of every readable recording (file order), as model input."""
    params = bundle.manifest.frontend
    windows: list[np.ndarray] = []
    for path in find_audio_files(paths):
        try:
            samples = read_file(path, params.sampling_rate)
        except AudioError:
            continue
        windows += [w.samples for w in clip_windows(samples, params.window_samples, params.window_samples)]
        if len(windows) >= max_windows:
            break
    if not windows:
        raise ExportError(f"no readable audio under {', '.join(map(str, paths))}",
                          "pass --audio with folders of field recordings not used for calibration")
    return LogMelFrontend(params).batch(windows[:max_windows])


def _torch_stage(bundle: Bundle, model: str, features: np.ndarray, reference: np.ndarray) -> StageResult:
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import torch_embeddings

    result = fidelity(torch_embeddings(load_checkpoint(model), features), reference, None)
    passed = result.max_abs <= FP32_MAX_ABS and result.min_cosine >= FP32_MIN_COSINE
    return StageResult(TORCH_STAGE, "fp32", passed, result)


def _engine_stage(bundle: Bundle, key: str, features: np.ndarray, reference: np.ndarray,
                  labels: np.ndarray) -> StageResult:
    from edge.model.backends.trt import TrtBackend

    stage = f"ort_fp32->{key}"
    try:
        backend = TrtBackend(bundle, key.removeprefix("trt-"))
    except EdgeError as e:
        return StageResult(stage, key, False, None, note=f"not run: {e.message}")
    candidate = np.concatenate([backend.embed(features[i : i + backend.max_batch])
                                for i in range(0, features.shape[0], backend.max_batch)])
    result = fidelity(reference, candidate, labels)
    return StageResult(stage, key, result.passes(gates_for(key)), result)


def verify_bundle(bundle_dir: Path, audio: list[Path], model: str | None = None,
                  max_windows: int = DEFAULT_MAX_WINDOWS) -> list[StageResult]:
    """Run every stage, write each into ``parity.json`` and re-write the manifest (new parity checksum)."""
    bundle = open_bundle(bundle_dir)
    fp32 = bundle.model("fp32")
    if not model and all(key == "fp32" for key in bundle.manifest.models):
        raise ExportError(f"bundle {bundle.root} has only the fp32 model: nothing to compare",
                          f"add a variant first (`biolingual-export quantize --bundle {bundle.root} --precision fp16`),"
                          " or pass --model CHECKPOINT to check fp32 against torch")
    labels = bundle_label_embeddings(bundle)
    if labels is None:
        raise ExportError(f"bundle {bundle.root} has no label embeddings to compare rankings on",
                          f"add labels first: `biolingual-export labels --bundle {bundle.root} --labels FILE`")
    features = audio_features(audio, bundle, max_windows)
    reference = embed_all(ort_session(bundle.root / fp32.path), features)
    results = [_torch_stage(bundle, model, features, reference)] if model else []
    for key, entry in sorted(bundle.manifest.models.items()):
        if key == "fp32":
            continue
        if entry.runtime == "tensorrt":
            results.append(_engine_stage(bundle, key, features, reference, labels))
            continue
        candidate = embed_all(ort_session(bundle.root / entry.path, entry.precision), features)
        result = fidelity(reference, candidate, labels)
        results.append(StageResult(f"ort_fp32->ort_{key}", key, result.passes(gates_for(key)), result))
    for r in results:
        gates = (dataclasses.asdict(gates_for(r.model_key)) if r.stage != TORCH_STAGE
                 else {"max_abs": FP32_MAX_ABS, "min_cosine": FP32_MIN_COSINE})
        write_report(bundle.root, r.stage, r.fidelity, gates, r.passed, model_key=r.model_key, note=r.note)
    write_manifest(bundle.root, bundle.manifest)
    return results
