"""Calibration data: log-mel features computed by ``edge.model.frontend`` (so INT8 scales match runtime inputs).

On disk a folder with ``calibration.npz`` (one array per model input, keyed by input name) and
``calibration.json`` (where each window came from); in memory an iterable of feed dicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import CalibrationError
from calibration.select import WindowSource, select_windows
from edge.model.bundle import FrontendParams
from edge.model.frontend import LogMelFrontend

log = logging.getLogger(__name__)

DATA_FILE = "calibration.npz"
SOURCES_FILE = "calibration.json"
INPUT_NAME = "input_features"
DEFAULT_WINDOWS = 512
DEFAULT_BATCH = 8
RECOMMENDED_MIN_WINDOWS = 300
"""Below this many windows the activation ranges are estimated from too little audio; we warn."""


@dataclass(frozen=True)
class CalibrationSet:
    """``features`` ``(N, 1, n_frames, n_mels)`` float32 log-mel, with the source of every window."""

    features: np.ndarray
    sources: tuple[WindowSource, ...]
    seed: int
    input_name: str = INPUT_NAME

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def feeds(self, batch: int = DEFAULT_BATCH) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts ``{input_name: (b, 1, T, M)}`` of ``batch`` windows (the last one may be smaller)."""
        for start in range(0, len(self), batch):
            yield {self.input_name: self.features[start : start + batch]}

    def split(self, holdout_every: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(calibration, held-out): every ``holdout_every``-th window is held out for parity checks."""
        held = np.zeros(len(self), dtype=bool)
        held[holdout_every - 1 :: holdout_every] = True
        return self._subset(~held), self._subset(held)

    def _subset(self, mask: np.ndarray) -> CalibrationSet:
        sources = tuple(s for s, keep in zip(self.sources, mask) if keep)
        return CalibrationSet(self.features[mask], sources, self.seed, self.input_name)

    def require(self, batch: int) -> None:
        """Error below ``batch`` windows, warn below :data:`RECOMMENDED_MIN_WINDOWS`."""
        if len(self) < batch:
            raise CalibrationError(f"only {len(self)} calibration window(s), fewer than the batch of {batch}",
                                   "add more field recordings to --audio or lower --batch")
        if len(self) < RECOMMENDED_MIN_WINDOWS:
            log.warning("only %d calibration windows (recommended: at least %d); INT8 scales may not "
                        "represent all conditions", len(self), RECOMMENDED_MIN_WINDOWS)


def build_calibration_set(paths: list[Path], params: FrontendParams, count: int = DEFAULT_WINDOWS, seed: int = 0,
                          batch: int = DEFAULT_BATCH) -> CalibrationSet:
    """Select windows (:func:`select_windows`) and compute their features with the runtime frontend."""
    if count < batch:
        raise CalibrationError(f"--windows {count} is fewer than the batch of {batch}",
                               f"ask for at least {batch} windows (a few hundred recommended)")
    selected = select_windows(paths, params, count, seed)
    frontend = LogMelFrontend(params)
    features = frontend.batch([w.samples for w in selected])
    result = CalibrationSet(features, tuple(w.source for w in selected), seed)
    result.require(batch)
    return result


def save_calibration_set(data: CalibrationSet, out_dir: Path) -> Path:
    """Write ``calibration.npz`` (keyed by input name) and ``calibration.json``; returns the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {data.input_name: data.features}
    np.savez(out_dir / DATA_FILE, **arrays)
    meta = {"seed": data.seed, "input_name": data.input_name, "windows": [asdict(s) for s in data.sources]}
    (out_dir / SOURCES_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_dir


def load_calibration_set(folder: Path, input_name: str = INPUT_NAME) -> CalibrationSet:
    """Read a folder written by :func:`save_calibration_set`."""
    data_path, meta_path = folder / DATA_FILE, folder / SOURCES_FILE
    if not data_path.is_file() or not meta_path.is_file():
        raise CalibrationError(f"no calibration data in {folder} ({DATA_FILE} and {SOURCES_FILE} expected)",
                               "create it with `biolingual-export calibrate --audio DIR --bundle B --out DIR`")
    try:
        with np.load(data_path) as archive:
            features = archive[input_name].astype(np.float32)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        sources = tuple(WindowSource(**w) for w in meta["windows"])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CalibrationError(f"calibration data in {folder} is unreadable ({e!r})",
                               "re-create it with `biolingual-export calibrate`") from e
    if features.ndim != 4 or features.shape[0] != len(sources):
        raise CalibrationError(f"calibration data in {folder} has shape {features.shape} for {len(sources)} "
                               "windows", "re-create it with `biolingual-export calibrate`")
    return CalibrationSet(features, sources, int(meta.get("seed", 0)), input_name)
