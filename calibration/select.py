"""Choose representative 10 s windows from field recordings: stratified across files and across loudness.

Every readable file gets a share of the windows (so one long recording cannot dominate); within a file
the candidate windows (on a half-second grid) are sorted by RMS level and one window is drawn from each
of ``quota`` equal loudness strata, so loud calls and quiet background are both present. The draw is
seeded, so the same corpus, count and seed always give the same windows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from calibration.errors import CalibrationError
from edge.audio.files import find_audio_files, read_file
from edge.errors import AudioError
from edge.model.bundle import FrontendParams

log = logging.getLogger(__name__)

CANDIDATE_HOP_S = 0.5
"""Spacing of candidate window starts within a recording, in seconds."""
SILENCE_DBFS = -120.0
"""RMS level reported for an all-zero window (dBFS)."""


@dataclass(frozen=True)
class WindowSource:
    """Where one calibration window came from."""

    file: str
    start_sample: int
    """First sample of the window at the model rate."""
    rms_dbfs: float
    """RMS level of the window's samples in dB relative to full scale."""


@dataclass(frozen=True)
class SelectedWindow:
    source: WindowSource
    samples: np.ndarray
    """Mono float32 at the model rate, at most one window long."""


def _candidate_count(path: Path, params: FrontendParams) -> int:
    """Approximate number of candidate starts from the header (no decoding); 0 when unreadable."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return 0
    if info.frames <= 0 or info.samplerate <= 0:
        return 0
    seconds = info.frames / info.samplerate
    return 1 + max(0, int((seconds - params.max_length_s) / CANDIDATE_HOP_S))


def _quotas(capacities: list[int], count: int, rng: np.random.Generator) -> list[int]:
    """Spread ``count`` windows over files as evenly as their capacities allow (ties broken by ``rng``)."""
    quotas = [0] * len(capacities)
    order = rng.permutation(len(capacities))
    remaining = count
    while remaining > 0:
        open_files = [i for i in order if quotas[i] < capacities[i]]
        if not open_files:
            break
        share = max(1, remaining // len(open_files))
        for i in open_files:
            take = min(share, capacities[i] - quotas[i], remaining)
            quotas[i] += take
            remaining -= take
            if remaining == 0:
                break
    return quotas


def _rms_dbfs(samples: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """RMS level in dBFS of ``samples[s : s + length]`` for every start, via a cumulative sum of squares."""
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    ends = np.minimum(starts + length, samples.shape[0])
    mean_square = (energy[ends] - energy[starts]) / np.maximum(ends - starts, 1)
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(mean_square), SILENCE_DBFS)


def _pick_from_file(path: Path, samples: np.ndarray, quota: int, params: FrontendParams,
                    rng: np.random.Generator) -> list[SelectedWindow]:
    window = params.window_samples
    hop = int(CANDIDATE_HOP_S * params.sampling_rate)
    last_start = max(0, samples.shape[0] - window)
    starts = np.unique(np.append(np.arange(0, last_start + 1, hop), last_start))
    levels = _rms_dbfs(samples, starts, window)
    by_level = np.argsort(levels, kind="stable")
    strata = np.array_split(by_level, min(quota, by_level.shape[0]))
    chosen = sorted(int(stratum[rng.integers(stratum.shape[0])]) for stratum in strata)
    return [SelectedWindow(WindowSource(str(path), int(starts[i]), float(levels[i])),
                           samples[starts[i] : starts[i] + window]) for i in chosen]


def select_windows(paths: list[Path], params: FrontendParams, count: int, seed: int = 0) -> list[SelectedWindow]:
    """Up to ``count`` windows from the recordings under ``paths``, stratified by file and loudness.

    Unreadable files are skipped with a warning; none readable at all is a :class:`CalibrationError`.
    """
    files = find_audio_files(paths)
    capacities = [_candidate_count(p, params) for p in files]
    readable = [(p, c) for p, c in zip(files, capacities) if c > 0]
    if not readable:
        raise CalibrationError(f"no readable audio under {', '.join(map(str, paths))}",
                               "pass --audio with folders of WAV/FLAC field recordings")
    rng = np.random.default_rng(seed)
    quotas = _quotas([c for _, c in readable], count, rng)
    selected: list[SelectedWindow] = []
    for (path, _), quota in zip(readable, quotas):
        if quota == 0:
            continue
        try:
            samples = read_file(path, params.sampling_rate)
        except AudioError as e:
            log.warning("skipping %s", e)
            continue
        selected.extend(_pick_from_file(path, samples, quota, params, rng))
    if not selected:
        raise CalibrationError(f"no readable audio under {', '.join(map(str, paths))}",
                               "pass --audio with folders of WAV/FLAC field recordings")
    return selected
