"""Recent audio kept for detection clips: enough to cover every event still open, up to a hard cap.

Held as 16-bit PCM, the clips' own format: half the memory of float32 (a 120 s event at 48 kHz holds
11.5 MB instead of 23 MB while the model runs; BENCHMARKS.md, *Peak memory*). A clip is cut as views of the
held chunks, which the card encodes piece by piece: writing it copies none of the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.audio.chunk import AudioChunk

MAX_CLIP_S = 120.0
"""Longest audio kept for one clip; a longer event's clip is cut at its start (and says so)."""
PCM16_SCALE = np.float32(32768)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 (nominal [-1, 1]) -> int16: x * 32768 rounded to nearest (ties to even), clipped to int16.

    The conversion libsndfile 1.2 applies when it writes float audio to a 16-bit FLAC, so FLAC clips are
    the same samples as before the buffer held PCM (its WAV path truncates instead: within one step).
    """
    return np.clip(np.rint(samples * PCM16_SCALE), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Clip:
    """Audio for one event: ``pieces``, views of the held 16-bit PCM chunks in order (no copy), starting at
    ``start_sample``; ``cut_samples`` > 0 if its requested start (event start minus pre-roll) was no longer in
    memory."""

    pieces: tuple[np.ndarray, ...]
    start_sample: int
    cut_samples: int

    @property
    def samples(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    @property
    def audio(self) -> np.ndarray:
        """The pieces as one (N,) int16 array (a copy: writers take :attr:`pieces`)."""
        return np.concatenate(self.pieces)


class ClipBuffer:
    """Chunks of the current stream, pruned to what open events (and the next windows) may still need."""

    def __init__(self, sample_rate: int, keep_min_samples: int, max_clip_s: float = MAX_CLIP_S) -> None:
        self.keep_min_samples = keep_min_samples
        self.max_clip_samples = round(max_clip_s * sample_rate)
        self.max_samples = max(keep_min_samples, self.max_clip_samples)
        self._chunks: list[tuple[int, np.ndarray]] = []
        """(start sample, int16 samples) of each chunk held."""

    def reset(self) -> None:
        """Forget the audio (the stream was closed or jumped)."""
        self._chunks = []

    def push(self, chunk: AudioChunk, needed_from: int | None) -> None:
        """Keep ``chunk``; drop audio before ``needed_from`` (and before the cap) once no open event needs it."""
        self._chunks.append((chunk.start_sample, to_pcm16(chunk.samples)))
        keep_from = chunk.end_sample - self.keep_min_samples
        if needed_from is not None:
            keep_from = min(keep_from, needed_from)
        keep_from = max(keep_from, chunk.end_sample - self.max_samples)
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= keep_from:
            self._chunks.pop(0)

    def cut(self, start: int, end: int) -> Clip | None:
        """Audio of ``[start, end)`` as far as it is still held and within the last ``max_clip_s`` before ``end``
        (views of the chunks); None when none of it is."""
        wanted = max(start, end - self.max_clip_samples)
        pieces = []
        for first, samples in self._chunks:
            lo, hi = max(wanted, first), min(end, first + len(samples))
            if lo < hi:
                pieces.append((lo, samples[lo - first:hi - first]))
        if not pieces:
            return None
        first = pieces[0][0]
        return Clip(tuple(piece for _, piece in pieces), first, max(0, first - start))
