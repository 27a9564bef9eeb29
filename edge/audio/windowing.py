"""Chunks -> fixed-length windows with a hop, on integer sample indices; independent of chunk sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.audio.chunk import AudioChunk


@dataclass(frozen=True)
class Window:
    """One analysis window: ``samples`` (≤ window length, float32) starting at ``start_sample``."""

    start_sample: int
    samples: np.ndarray

    @property
    def end_sample(self) -> int:
        return self.start_sample + int(self.samples.shape[0])


def clip_windows(samples: np.ndarray, window_samples: int, hop_samples: int) -> list[Window]:
    """All windows of a whole in-memory clip starting at sample 0, tail window included."""
    windower = Windower(window_samples, hop_samples)
    return windower.push(AudioChunk(samples, sample_rate=0, start_sample=0)) + windower.flush()  # rate unused here


class Windower:
    """Cuts a contiguous sample stream into windows ``[k·hop, k·hop + window)``.

    ``flush()`` at end of stream adds one last window aligned to the stream end when the regular grid
    left audio unanalysed, or a single short window when the whole stream was shorter than a window.
    """

    def __init__(self, window_samples: int, hop_samples: int) -> None:
        if not 0 < hop_samples <= window_samples:
            raise ValueError(f"hop ({hop_samples}) must be in 1..window ({window_samples}) samples")
        self.window = window_samples
        self.hop = hop_samples
        self._buffer = np.empty(4 * window_samples, dtype=np.float32)
        self.reset()

    def reset(self, start_sample: int = 0) -> None:
        """Forget buffered audio; the next chunk must start at ``start_sample``."""
        self._buffer_start = start_sample
        self._filled = 0
        self._next_start = start_sample
        self._stream_start = start_sample
        self._last_end: int | None = None

    @property
    def stream_start(self) -> int:
        """Sample index the current contiguous stream began at (after the last reset)."""
        return self._stream_start

    @property
    def buffered_end(self) -> int:
        """Sample index one past the newest buffered sample."""
        return self._buffer_start + self._filled

    def push(self, chunk: AudioChunk) -> list[Window]:
        """Append a chunk (must continue the stream exactly) and return the windows it completed."""
        if chunk.start_sample != self.buffered_end:
            raise ValueError(f"chunk starts at {chunk.start_sample}, expected {self.buffered_end}")
        samples = chunk.samples
        windows: list[Window] = []
        offset = 0
        while offset < samples.shape[0]:
            self._make_room()
            take = min(samples.shape[0] - offset, self._buffer.shape[0] - self._filled)
            self._buffer[self._filled : self._filled + take] = samples[offset : offset + take]
            self._filled += take
            offset += take
            windows.extend(self._complete_windows())
        return windows

    def flush(self) -> list[Window]:
        """End of stream: the tail window (see class docstring), if any audio is left unanalysed."""
        end = self.buffered_end
        if self._last_end is None:
            if end == self._stream_start:
                return []
            start = self._stream_start
        elif self._last_end < end:
            start = max(self._stream_start, end - self.window)
        else:
            return []
        self._last_end = end
        return [self._window_at(start, end)]

    def _complete_windows(self) -> list[Window]:
        windows = []
        while self._next_start + self.window <= self.buffered_end:
            windows.append(self._window_at(self._next_start, self._next_start + self.window))
            self._last_end = self._next_start + self.window
            self._next_start += self.hop
        return windows

    def _window_at(self, start: int, end: int) -> Window:
        lo = start - self._buffer_start
        return Window(start, self._buffer[lo : lo + (end - start)].copy())

    def _make_room(self) -> None:
        """Keep only the last ``window`` samples (enough for the next window and the tail) when full."""
        if self._filled < self._buffer.shape[0]:
            return
        keep_from = max(0, min(self._next_start - self._buffer_start, self._filled - self.window))
        kept = self._filled - keep_from
        self._buffer[:kept] = self._buffer[keep_from : self._filled]
        self._buffer_start += keep_from
        self._filled = kept
