"""Stage-by-stage agreement: max abs error and cosine between two embedding sets, gated and reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge import durable
from edge.audio.files import find_audio_files, read_file
from edge.audio.windowing import clip_windows
from edge.errors import AudioError
from edge.model.bundle import PARITY_FILE, read_manifest, sha256_file
from edge.model.frontend import LogMelFrontend
from export.errors import ExportError
from export.fidelity import Fidelity

PARITY_BATCHES = (1, 3, 8)
FP32_MAX_ABS = 1e-4
FP32_MIN_COSINE = 0.99999


@dataclass(frozen=True)
class Agreement:
    """How closely a candidate's embeddings follow a reference's on the same windows."""

    windows: int
    max_abs: float
    min_cosine: float
    mean_cosine: float


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Compare two ``(N, D)`` embedding arrays row by row."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    cos = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    return Agreement(windows=int(ref.shape[0]), max_abs=float(np.abs(ref - cand).max()),
                     min_cosine=float(cos.min()), mean_cosine=float(cos.mean()))


def real_windows(audio_dir: Path, frontend: LogMelFrontend, count: int) -> np.ndarray:
    """``count`` model-input windows ``(count,1,T,M)`` cut from the recordings under ``audio_dir`` (sorted)."""
    params = frontend.params
    windows = []
    for path in find_audio_files([audio_dir]):
        try:
            samples = read_file(path, params.sampling_rate)
        except AudioError:
            continue
        cut = clip_windows(samples, params.window_samples, params.window_samples)
        windows.extend(w.samples for w in cut)
        if len(windows) >= count:
            break
    if len(windows) < count:
        raise ExportError(f"only {len(windows)} windows of real audio under {audio_dir}, need {count}",
                          "pass --parity-audio with a folder of field recordings")
    return frontend.batch(windows[:count])


def batches(features: np.ndarray, sizes: tuple[int, ...] = PARITY_BATCHES) -> Iterator[np.ndarray]:
    """Consecutive slices of ``features`` of the given batch sizes."""
    start = 0
    for size in sizes:
        yield features[start : start + size]
        start += size


def write_report(bundle_dir: Path, stage: str, result: Agreement | Fidelity | None, gates: dict[str, float],
                 passed: bool, model_key: str | None = None, note: str = "") -> None:
    """Add or replace one stage's entry in ``parity.json``.

    With ``model_key`` the stage also becomes that model's verdict under ``models`` (with the model file's
    sha256, so a re-exported file is not covered by an old report): what ``edge`` checks before using it.
    """
    path = bundle_dir / PARITY_FILE
    report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    report.setdefault("stages", {})
    report.setdefault("models", {})
    numbers = asdict(result) if result is not None else {}
    report["stages"][stage] = {**numbers, "gates": gates, "passed": passed, **({"note": note} if note else {})}
    if model_key is not None:
        manifest = read_manifest(bundle_dir)
        model_file = manifest.models[model_key].path
        report["models"][model_key] = {"stage": stage, "passed": passed,
                                       "sha256": sha256_file(bundle_dir / model_file)}
    durable.atomic_write(path, json.dumps(report, indent=2, sort_keys=True).encode("utf-8"))
