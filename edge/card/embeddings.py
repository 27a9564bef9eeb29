"""Writers of window embeddings: the unit's card log (``embeddings/`` segments) and ``analyze --embeddings``.

On the card, embeddings are one more :class:`~edge.card.segments.SegmentStream` of the card log: queued per
batch, appended and fsync'd in the same flush as detections and effort, rotated per UTC day and size by an
atomic rename. The format is in :mod:`edge.card.embedformat`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge import durable
from edge.card.cardformat import epoch_us, from_epoch_us
from edge.card.embedformat import (
    EMBEDDINGS_DIR,
    EXTENSION,
    UNKNOWN_UTC_US,
    SegmentHeader,
    encode_records,
)
from edge.card.segments import SegmentStream
from edge.card.streamclock import StreamClock
from edge.model.bundle import Bundle
from edge.model.space import recorded_space

if TYPE_CHECKING:
    from edge.batch.piece_analysis import PieceResult
    from edge.batch.pieces import Piece

MAX_PENDING_EMBEDDINGS = 1024
"""Batches of embeddings held in memory while the card cannot be written (≈ 4 MiB at 4 windows of 512-d fp16
per batch); beyond this the oldest are dropped (counted like every other record kind)."""
FILE_ARCHIVE_UNIT = "recordings"
"""``unit_id`` of windows archived by :meth:`FileEmbeddingArchive.write_segment` when no unit is named
(``analyze --embeddings`` names each recording's site; the key is the file path and offset)."""
RECORDING_CLOCK = "rtc"
"""Clock state of a dated recording's windows: its start comes from the recorder's own clock."""
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
    embedding_space: str = ""
    """The bundle's embedding space (``""``: an old bundle that names none and has no fp32 file)."""


def embedding_spec(bundle: Bundle, precision: str, dtype: str) -> EmbeddingSpec | None:
    """The spec for the model file that runs at ``precision``; None when ``dtype`` is ``off``."""
    if dtype == "off":
        return None
    entry = bundle.model(precision)
    dim = entry.outputs[0].shape[-1]
    if not isinstance(dim, int):
        raise ValueError(f"bundle {bundle.root}: model output {entry.outputs[0].name} has no fixed size")
    return EmbeddingSpec(dtype, dim, bundle.manifest.files.get(entry.path, ""), recorded_space(bundle))


class CardEmbeddings:
    """The ``embeddings`` stream of one boot's card log."""

    def __init__(self, root: Path, unit_id: str, deployment_id: str, boot_id: str, sample_rate: int,
                 spec: EmbeddingSpec, source: Path | None = None) -> None:
        """``source``: the recording a ``run --input`` stream reads (its start samples are offsets in it)."""
        self.header = SegmentHeader(unit_id, deployment_id, boot_id, sample_rate, spec.dim, spec.dtype,
                                    spec.model_sha256, embedding_space=spec.embedding_space,
                                    source_path=None if source is None else str(source.resolve()))
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
    """``analyze --embeddings DIR`` as a sink of the analyze writer: one segment per work unit, written whole.

    Segments are written by an atomic rename and keyed by file path + sample offset, so a unit written but not
    yet in the work log when a run was killed is simply written again, identically, by ``--resume``.
    """

    name = "embeddings"

    def __init__(self, out_dir: Path, sample_rate: int, spec: EmbeddingSpec,
                 start_utc: Callable[[Path], datetime | None],
                 unit_of: Callable[[Path], str] = lambda _: FILE_ARCHIVE_UNIT) -> None:
        self.folder = out_dir / EMBEDDINGS_DIR
        self.sample_rate = sample_rate
        self.spec = spec
        self.start_utc = start_utc
        self.unit_of = unit_of
        """The unit (site) a recording's windows are filed under."""
        durable.make_dirs(self.folder)

    def resume(self, state: Any) -> None:
        """Nothing to cut back: every segment on disk is whole."""

    def write(self, unit: Piece, result: PieceResult) -> None:
        if result.error is not None or result.embeddings is None or not result.window_starts:
            return
        self.write_segment(unit.path, self.start_utc(unit.path), list(result.window_starts),
                           list(result.window_ends), result.embeddings, part=unit.start_sample)

    def checkpoint(self) -> Any:
        return None

    def close(self) -> None:
        """Every segment is closed when written."""

    def write_segment(self, source: Path, start_utc: datetime | None, starts: list[int], ends: list[int],
                      vectors: np.ndarray, part: int = 0) -> Path:
        """Store windows of ``source`` (offsets at the model rate) from sample ``part`` on; returns the segment."""
        boot = file_boot_id(source, self.spec.model_sha256)
        header = SegmentHeader(self.unit_of(source), "", boot, self.sample_rate, self.spec.dim, self.spec.dtype,
                               self.spec.model_sha256, source_path=str(source.resolve()),
                               source_start_utc=start_utc.isoformat() if start_utc else None,
                               embedding_space=self.spec.embedding_space)
        offsets = np.asarray(starts, np.int64)
        if start_utc is None:
            utc_us = np.full(offsets.shape, UNKNOWN_UTC_US, np.int64)
        else:
            utc_us = epoch_us(start_utc) + offsets * 1_000_000 // self.sample_rate
        day = start_utc.date().isoformat() if start_utc else UNKNOWN_DAY
        path = self.folder / f"{day}_{boot}_{part:012d}.{EXTENSION}"
        vectors = np.asarray(vectors, np.float32).reshape(len(starts), self.spec.dim)
        clock_sync = "unsynchronised" if start_utc is None else RECORDING_CLOCK
        durable.atomic_write(path, header.encode() + encode_records(header, 1, clock_sync, offsets,
                                                                    np.asarray(ends, np.int64), utc_us, vectors))
        return path
