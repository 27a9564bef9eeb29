"""Self-describing audio chunks: samples plus where they sit in the stream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 samples at ``sample_rate`` starting at ``start_sample`` (index from stream start)."""

    samples: np.ndarray
    """Shape (N,), float32, nominal range [-1, 1]."""
    sample_rate: int
    """Hz."""
    start_sample: int
    """Index of ``samples[0]`` counted from the start of the stream, at ``sample_rate``."""

    @property
    def end_sample(self) -> int:
        """One past the index of the last sample."""
        return self.start_sample + int(self.samples.shape[0])


def downmix(frames: np.ndarray, channel: int | None = None) -> np.ndarray:
    """(N,) or (N, C) -> (N,) float32: the mean of the channels, or one selected channel (0-based)."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    if channel is not None:
        return np.ascontiguousarray(frames[:, channel], dtype=np.float32)
    if frames.shape[1] == 1:  # mono: the mean of one value, bit for bit (+0.0 for -0.0), in one contiguous pass
        return np.add(frames[:, 0], np.float32(0.0), dtype=np.float32)
    return frames.mean(axis=1, dtype=np.float32)
