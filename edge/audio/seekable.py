"""Random access to a recording at the model rate: any sample range, the same values however it is read.

A file at the model rate is read directly. Any other rate is resampled in fixed, independent segments
(each with context on both sides, cut on the rate ratio's period so output indices are integers), so
a sample's value depends only on its own segment: reading a range from the middle of a file gives exactly
what one pass over the whole file gives, which a streaming resampler restarted mid-file would not.
The segments agree with a one-shot soxr resample of the whole file to float32 rounding (≈1e-7).
"""

from __future__ import annotations

from math import ceil, gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge.audio.chunk import downmix
from edge.audio.pcm import read_float32
from edge.errors import AudioError

SEEKABLE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF"})
"""libsndfile formats whose seek is sample-exact (MP3 and Ogg are not)."""
SEGMENT_S = 10.0
"""Input audio resampled in one independent piece, seconds (rounded up to the rate ratio's period)."""
CONTEXT_S = 0.1
"""Input audio on each side of a segment, seconds: longer than soxr's filter reaches, so junctions are seamless."""


def resampled_length(frames: int, in_rate: int, out_rate: int) -> int:
    """Samples a whole-file resample yields: ``frames × out/in`` rounded to the nearest (as soxr does)."""
    return (2 * frames * out_rate + in_rate) // (2 * in_rate)


class SeekableAudio:
    """A seekable file as mono float32 at ``rate``; ``total`` samples; :meth:`read` any ``[start, end)``."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        try:
            self._handle = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise AudioError(f"{path}: not a readable audio file ({e})", "convert it to WAV or FLAC") from e
        self.in_rate = int(self._handle.samplerate)
        self.frames = int(self._handle.frames)
        self.total = resampled_length(self.frames, self.in_rate, rate)
        period_in = self.in_rate // gcd(self.in_rate, rate)
        self._ratio = (period_in, rate // gcd(self.in_rate, rate))
        self._segment_in = ceil(SEGMENT_S * self.in_rate / period_in) * period_in
        self._context_in = ceil(CONTEXT_S * self.in_rate / period_in) * period_in
        self._cached: tuple[int, np.ndarray] | None = None

    def __enter__(self) -> SeekableAudio:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def _frames(self, start: int, end: int) -> np.ndarray:
        try:
            self._handle.seek(start)
            frames = read_float32(self._handle, end - start)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{self.path}: decoding failed at {start / self.in_rate:.1f} s ({e})",
                             "the file may be truncated; re-copy it from the card") from e
        if frames.shape[0] != end - start:
            raise AudioError(f"{self.path}: audio ends at {(start + frames.shape[0]) / self.in_rate:.1f} s, before "
                             f"the {self.frames / self.in_rate:.1f} s its header promises",
                             "the file is truncated; re-copy it from the card")
        return downmix(frames)

    def _to_out(self, frames: int) -> int:
        return frames // self._ratio[0] * self._ratio[1]

    def _segment(self, index: int) -> np.ndarray:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        first = index * self._segment_in
        lo, hi = max(0, first - self._context_in), min(self.frames, first + self._segment_in + self._context_in)
        resampled = soxr.resample(self._frames(lo, hi), self.in_rate, self.rate)
        skip = self._to_out(first - lo)
        length = min(self._to_out(self._segment_in), self.total - self._to_out(first))
        segment = np.ascontiguousarray(resampled[skip : skip + length], dtype=np.float32)
        self._cached = (index, segment)
        return segment

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)`` at the model rate, float32 mono (``0 <= start < end <= total``)."""
        if self.in_rate == self.rate:
            return self._frames(start, end)
        per_segment = self._to_out(self._segment_in)
        pieces = []
        for index in range(start // per_segment, (end - 1) // per_segment + 1):
            base = index * per_segment
            segment = self._segment(index)
            pieces.append(segment[max(start, base) - base : min(end, base + segment.shape[0]) - base])
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
