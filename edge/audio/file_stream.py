"""A recording played through the daemon's capture interface, at real-time pace or as fast as possible."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge.audio.chunk import AudioChunk
from edge.audio.files import stream_file
from edge.audio.mic import CaptureStats, OpenedStream
from edge.audio.recording_time import recording_start_utc

DEFAULT_CHUNK_SAMPLES = 4_800


def rechunk(chunks: Iterator[AudioChunk], size: int) -> Iterator[AudioChunk]:
    """The same contiguous samples re-cut into chunks of exactly ``size`` (the last may be shorter)."""
    pending = np.empty(0, dtype=np.float32)
    start = None
    rate = 0
    for chunk in chunks:
        rate = chunk.sample_rate
        if start is None:
            start = chunk.start_sample
        pending = np.concatenate([pending, chunk.samples])
        while pending.shape[0] >= size:
            yield AudioChunk(pending[:size], chunk.sample_rate, start)
            start += size
            pending = pending[size:]
    if pending.shape[0] and start is not None:
        yield AudioChunk(pending, rate, start)


class FileStreamSource:
    """Streams ``path`` as 48 kHz mono chunks of ``chunk_samples``; ``realtime`` paces them to the wall clock."""

    def __init__(self, path: Path, target_rate: int, realtime: bool = False,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> None:
        self.path = path
        self.target_rate = target_rate
        self.realtime = realtime
        self.chunk_samples = chunk_samples
        self.stats = CaptureStats()
        self.finished = False
        self._chunks: Iterator[AudioChunk] | None = None
        self._offset = 0
        self._t0 = 0.0
        self._position = 0

    def open(self, start_sample: int) -> OpenedStream:
        """Start streaming; a missing or unreadable file raises :class:`AudioError` here, not in the reader."""
        self._offset = start_sample
        chunks = rechunk(stream_file(self.path, self.target_rate), self.chunk_samples)
        first = next(chunks, None)
        self._chunks = chunks if first is None else itertools.chain([first], chunks)
        self._t0 = time.monotonic()
        # the recording's own start (GUANO, AudioMoth comment, file name), so detections get its real UTC times
        started = recording_start_utc(self.path) or datetime.now(timezone.utc)
        return OpenedStream(str(self.path), self.target_rate, 1, started, start_sample)

    def renumber(self, start_sample: int) -> None:
        self._offset = start_sample

    def available(self) -> bool:
        return self.path.is_file()

    def read(self, timeout: float) -> AudioChunk | None:
        if self._chunks is None or self.finished:
            return None
        chunk = next(self._chunks, None)
        if chunk is None:
            self.finished = True
            return None
        if self.realtime:
            due = self._t0 + chunk.end_sample / self.target_rate
            time.sleep(max(0.0, due - time.monotonic()))
        self._position = chunk.end_sample
        return AudioChunk(chunk.samples, chunk.sample_rate, chunk.start_sample + self._offset)

    @property
    def active(self) -> bool:
        return not self.finished

    def pending_seconds(self) -> float:
        """In real-time mode, whole chunks that have 'arrived' by the wall clock but not been read yet."""
        if not self.realtime or self.finished:
            return 0.0
        backlog = (time.monotonic() - self._t0) * self.target_rate - self._position
        return backlog / self.target_rate if backlog >= self.chunk_samples else 0.0

    def close(self) -> None:
        self._chunks = None
