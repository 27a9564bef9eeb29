"""Writers of window embeddings: the unit's card log (``embeddings/`` segments) and ``analyze --embeddings``.

On the card, embeddings are one more :class:`~edge.sinks.segments.SegmentStream` of the card log: queued per
batch, appended and fsync'd in the same flush as detections and effort, rotated per UTC day and size by an
atomic rename. The format is in :mod:`edge.sinks.embedformat`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edge.bundle import Bundle
from edge.sinks.cardformat import epoch_us, from_epoch_us
from edge.sinks.embedformat import (
    EMBEDDINGS_DIR,
    EXTENSION,
    UNKNOWN_UTC_US,
    SegmentHeader,
    encode_records,
)
from edge.sinks.segments import SegmentStream, atomic_write
from edge.sinks.streamclock import StreamClock
from edge.windowing import Window

MAX_PENDING_EMBEDDINGS = 1024
"""Batches of embeddings held in memory while the card cannot be written (≈ 4 MiB at 4 windows of 512-d fp16
per batch); beyond this the oldest are dropped (counted like every other record kind)."""
FILE_ARCHIVE_UNIT = "recordings"
"""``unit_id`` of windows archived by ``analyze --embeddings`` (their key is the file path and offset)."""
FILE_BOOT_HASH_CHARS = 16
UNKNOWN_DAY = "unknown"
"""Day part of a recording's segment name when its start time is not known."""


@dataclass(frozen=True)
class EmbeddingSpec:
    """How a run keeps its window embeddings."""

    dtype: str
    """``fp16`` or ``int8``."""
    dim: int
    model_sha256: str


def embedding_spec(bundle: Bundle, precision: str, dtype: str) -> EmbeddingSpec | None:
    """The spec for the model file that runs at ``precision``; None when ``dtype`` is ``off``."""
    if dtype == "off":
        return None
    entry = bundle.model(precision)
    dim = entry.outputs[0].shape[-1]
    if not isinstance(dim, int):
        raise ValueError(f"bundle {bundle.root}: model output {entry.outputs[0].name} has no fixed size")
    return EmbeddingSpec(dtype, dim, bundle.manifest.files.get(entry.path, ""))


class CardEmbeddings:
    """The ``embeddings`` stream of one boot's card log."""

    def __init__(self, root: Path, unit_id: str, deployment_id: str, boot_id: str, sample_rate: int,
                 spec: EmbeddingSpec) -> None:
        self.header = SegmentHeader(unit_id, deployment_id, boot_id, sample_rate, spec.dim, spec.dtype,
                                    spec.model_sha256)
        self.stream = SegmentStream(root / EMBEDDINGS_DIR, boot_id, EXTENSION, self.header.encode(),
                                    MAX_PENDING_EMBEDDINGS)

    def add(self, clock: StreamClock, starts: list[int], ends: list[int], vectors: np.ndarray) -> None:
        """Queue one record per window (``vectors`` ``(B, dim)`` float32, L2-normalised), one blob per UTC day."""
        utc_us = np.array([clock.utc_us(s) for s in starts], np.int64)
        days = [from_epoch_us(int(u)).date() for u in utc_us]
        first = 0
        for index in range(1, len(days) + 1):
            if index == len(days) or days[index] != days[first]:
                self.stream.add(days[first], encode_records(
                    self.header, clock.stream, clock.clock_sync, np.asarray(starts[first:index]),
                    np.asarray(ends[first:index]), utc_us[first:index], vectors[first:index]))
                first = index


def file_boot_id(source: Path, model_sha256: str) -> str:
    """A stable id for the windows of one recording under one model: re-analysing adds nothing new."""
    digest = hashlib.sha256(f"{source.resolve()}\n{model_sha256}".encode()).hexdigest()
    return f"file-{digest[:FILE_BOOT_HASH_CHARS]}"


class FileEmbeddingArchive:
    """``analyze --embeddings DIR``: one segment per recording, written whole (atomic rename) when it is done."""

    def __init__(self, out_dir: Path, sample_rate: int, spec: EmbeddingSpec) -> None:
        self.folder = out_dir / EMBEDDINGS_DIR
        self.sample_rate = sample_rate
        self.spec = spec
        self.folder.mkdir(parents=True, exist_ok=True)

    def recording(self) -> RecordingEmbeddings:
        """An accumulator for one recording's batches (pass its ``add`` to ``analyze_chunks``)."""
        return RecordingEmbeddings()

    def write(self, source: Path, start_utc: datetime | None, starts: list[int], ends: list[int],
              vectors: np.ndarray) -> Path:
        """Store a recording's windows (offsets into ``source`` at the model rate); returns the segment path."""
        boot = file_boot_id(source, self.spec.model_sha256)
        header = SegmentHeader(FILE_ARCHIVE_UNIT, "", boot, self.sample_rate, self.spec.dim, self.spec.dtype,
                               self.spec.model_sha256, source_path=str(source.resolve()),
                               source_start_utc=start_utc.isoformat() if start_utc else None)
        offsets = np.asarray(starts, np.int64)
        if start_utc is None:
            utc_us = np.full(offsets.shape, UNKNOWN_UTC_US, np.int64)
        else:
            utc_us = epoch_us(start_utc) + offsets * 1_000_000 // self.sample_rate
        day = start_utc.date().isoformat() if start_utc else UNKNOWN_DAY
        path = self.folder / f"{day}_{boot}_000.{EXTENSION}"
        vectors = np.asarray(vectors, np.float32).reshape(len(starts), self.spec.dim)
        atomic_write(path, header.encode() + encode_records(header, 1, "unsynchronised", offsets,
                                                            np.asarray(ends, np.int64), utc_us, vectors))
        return path


class RecordingEmbeddings:
    """The windows and embeddings of one recording, batch by batch."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.vectors: list[np.ndarray] = []

    def add(self, windows: list[Window], embeddings: np.ndarray) -> None:
        self.starts.extend(w.start_sample for w in windows)
        self.ends.extend(w.end_sample for w in windows)
        self.vectors.append(np.asarray(embeddings, np.float32))

    def write(self, archive: FileEmbeddingArchive, source: Path, start_utc: datetime | None) -> Path:
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, archive.spec.dim), np.float32)
        return archive.write(source, start_utc, self.starts, self.ends, vectors)
