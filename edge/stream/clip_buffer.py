"""Recent audio kept for detection clips: enough to cover every event still open, up to a hard cap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.audio.chunk import AudioChunk

MAX_CLIP_S = 120.0
"""Longest audio kept for one clip; a longer event's clip is cut at its start (and says so)."""


@dataclass(frozen=True)
class Clip:
    """Audio for one event: ``audio`` (N,) float32 starting at ``start_sample``; ``cut_samples`` > 0 if its
    requested start (event start minus pre-roll) was no longer in memory."""

    audio: np.ndarray
    start_sample: int
    cut_samples: int


class ClipBuffer:
    """Chunks of the current stream, pruned to what open events (and the next windows) may still need."""

    def __init__(self, sample_rate: int, keep_min_samples: int, max_clip_s: float = MAX_CLIP_S) -> None:
        self.keep_min_samples = keep_min_samples
        self.max_samples = max(keep_min_samples, round(max_clip_s * sample_rate))
        self._chunks: list[AudioChunk] = []

    def reset(self) -> None:
        """Forget the audio (the stream was closed or jumped)."""
        self._chunks = []

    def push(self, chunk: AudioChunk, needed_from: int | None) -> None:
        """Keep ``chunk``; drop audio before ``needed_from`` (and before the cap) once no open event needs it."""
        self._chunks.append(chunk)
        keep_from = chunk.end_sample - self.keep_min_samples
        if needed_from is not None:
            keep_from = min(keep_from, needed_from)
        keep_from = max(keep_from, chunk.end_sample - self.max_samples)
        while self._chunks and self._chunks[0].end_sample <= keep_from:
            self._chunks.pop(0)

    def cut(self, start: int, end: int) -> Clip | None:
        """Audio of ``[start, end)`` as far as it is still held; None when none of it is."""
        parts = [c for c in self._chunks if c.end_sample > start and c.start_sample < end]
        if not parts:
            return None
        audio = np.concatenate([c.samples for c in parts])
        first = parts[0].start_sample
        lo, hi = max(0, start - first), min(audio.shape[0], end - first)
        return Clip(audio[lo:hi], first + lo, max(0, first + lo - start))
