"""Preallocated ring buffer between the PortAudio callback (writer) and the analysis thread (reader).

The writer only copies; it never allocates or blocks. If the reader falls more than the capacity
behind, the oldest unread frames are overwritten and counted — never silently lost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RingRead:
    """Frames taken from the ring, and how many unread frames were overwritten just before them."""

    frames: np.ndarray
    """(N, C) float32 at the device rate."""
    first_frame: int
    """Index of ``frames[0]`` in the device-rate frame count since the ring was created."""
    overwritten: int
    """Frames lost to overwrites immediately before ``first_frame``."""


class RingBuffer:
    """Single-producer single-consumer frame ring of fixed capacity (frames × channels, float32)."""

    def __init__(self, capacity_frames: int, channels: int) -> None:
        self._data = np.zeros((capacity_frames, channels), dtype=np.float32)
        self.capacity = capacity_frames
        self._written = 0
        self._read = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()

    @property
    def written(self) -> int:
        """Frames ever written (monotonic)."""
        return self._written

    @property
    def pending(self) -> int:
        """Frames written but not yet read (capped at capacity)."""
        return min(self._written - self._read, self.capacity)

    def write(self, frames: np.ndarray) -> None:
        """Copy (N, C) frames in; called from the audio callback."""
        n = frames.shape[0]
        if n > self.capacity:
            frames = frames[-self.capacity :]
            with self._lock:
                self._written += n - self.capacity
            n = self.capacity
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._data[start : start + first] = frames[:first]
        self._data[: n - first] = frames[first:]
        with self._lock:
            self._written += n
        self._ready.set()

    def read(self, timeout: float) -> RingRead | None:
        """All unread frames (waiting up to ``timeout`` s for some), or None if none arrived."""
        if self._written == self._read and not self._ready.wait(timeout):
            return None
        with self._lock:
            self._ready.clear()
            written = self._written
            overwritten = max(0, written - self._read - self.capacity)
            start = self._read + overwritten
            self._read = written
        n = written - start
        if n == 0:
            return None
        begin = start % self.capacity
        first = min(n, self.capacity - begin)
        frames = np.concatenate([self._data[begin : begin + first], self._data[: n - first]])
        return RingRead(frames, start, overwritten)
