"""Streaming resampling to the model rate with soxr; output is independent of how input is chunked."""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Mono float32 at ``in_rate`` -> mono float32 at ``out_rate``, chunk by chunk (identity when equal)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")

    def push(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block; pass ``last=True`` once at the end to flush soxr's delay line."""
        if self._stream is None:
            return samples.astype(np.float32, copy=False)
        return self._stream.resample_chunk(samples.astype(np.float32, copy=False), last=last)

    def reset(self) -> None:
        """Start a new stream (after a gap): forget the filter state."""
        if self._stream is not None:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32")
