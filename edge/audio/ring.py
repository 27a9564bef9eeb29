"""Preallocated ring buffer between the PortAudio callback (writer) and the analysis thread (reader).

The writer only copies; it never allocates. If the reader falls more than the capacity behind, the oldest
unread frames are overwritten and counted — never silently lost. The ring lives in its own anonymous memory map,
and the pages a read has emptied are handed back to the kernel, so a ring sized for a long stall holds only the
frames still pending in memory (a unit's resident size does not grow by the ring's 30 s of audio).
"""

from __future__ import annotations

import mmap
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
        self._frame_bytes = channels * np.dtype(np.float32).itemsize
        self._map = mmap.mmap(-1, max(capacity_frames * self._frame_bytes, 1), flags=mmap.MAP_PRIVATE)
        self._data = np.frombuffer(self._map, dtype=np.float32, count=capacity_frames * channels).reshape(
            capacity_frames, channels)
        self.capacity = capacity_frames
        self._written = 0
        self._read = 0
        self._lock = threading.Lock()
        self._copying = threading.Lock()
        """Held by the writer while it copies in and counts, and by the reader while it releases pages."""
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
        with self._copying:
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
        self._release(start, written)
        return RingRead(frames, start, overwritten)

    def _release(self, start: int, stop: int) -> None:
        """Hand back the pages that hold only frames read (``start``..``stop``) or older ones.

        A page is kept if the writer may have put unread frames in it: when the frames after ``stop`` were
        already being written, the page holding ``stop`` stays, and in a stall that nearly laps the ring
        nothing is released.
        """
        page = mmap.PAGESIZE
        with self._copying:
            if self._written - start + page // self._frame_bytes + 1 > self.capacity:
                return
            begin = start % self.capacity
            first = min(stop - start, self.capacity - begin)
            spans = [(begin, begin + first), (0, stop - start - first)]
            for number, (low_frame, high_frame) in enumerate(spans):
                low = low_frame * self._frame_bytes // page * page
                high = high_frame * self._frame_bytes
                last = number == 1 or spans[1][1] == 0
                if not last or self._written == stop:
                    high = min(-(-high // page) * page, len(self._map))
                else:
                    high = high // page * page
                if high > low:
                    self._map.madvise(mmap.MADV_DONTNEED, low, high - low)
