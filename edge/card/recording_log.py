"""``analyze --embeddings DIR`` as a season: each recording filed as one boot of its site's card log.

Most seasons are SD cards of recordings in one folder per site (AudioMoth and the like), never a daemon. So
that ``logs collect DIR`` files them exactly as it files a unit's card, this sink writes, beside the window
embeddings, the card log a unit would have written for the same audio: per recording a boot manifest, a
``stream_open`` event anchored at the recording's own start time, the effort of every analysed minute, the
detections (only when a threshold decided them) and a ``log_close`` at the recording's end. The unit id is
the recording's folder name (the site), unless the run names one.

Every file is written whole per piece, by an atomic rename, with names and contents fixed by the piece, so a
piece written again by ``--resume`` leaves the same files; ``collect`` reads them like any card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import durable
from edge.card.cardformat import (
    BOOTS_DIR,
    DETECTION_COLUMNS,
    DETECTIONS_DIR,
    EFFORT_COLUMNS,
    EFFORT_DIR,
    ENVELOPE_FIELDS,
    EVENTS_DIR,
    SCHEMA_VERSION,
    epoch_us,
    format_utc,
    segment_name,
)
from edge.card.effort import EffortCounter
from edge.card.embeddings import RECORDING_CLOCK
from edge.card.segments import csv_line, json_line
from edge.card.streamclock import StreamClock

if TYPE_CHECKING:
    from edge.batch.piece_analysis import PieceResult
    from edge.batch.pieces import Piece

STREAM = 1
"""A recording is one stream of its boot."""
OPEN_SEQ, CLOSE_SEQ = 1, 2
"""Sequence numbers of a recording's two events (``stream_open``, ``log_close``): fixed, so rewrites match."""


def folder_unit(path: Path) -> str:
    """The default unit id of a recording: the name of the folder it lies in (the site's folder)."""
    return Path(os.path.abspath(path)).parent.name or "recordings"


class RecordingSeasonLog:
    """A :class:`~edge.batch.writer.PieceSink` writing the card log of recordings on disk (module docstring)."""

    name = "season_log"

    def __init__(self, root: Path, sample_rate: int, start_utc: Callable[[Path], datetime | None],
                 unit_of: Callable[[Path], str], boot_of: Callable[[Path], str], settings: dict[str, Any],
                 keep_detections: bool) -> None:
        self.root = root
        self.sample_rate = sample_rate
        self.start_utc = start_utc
        self.unit_of = unit_of
        self.boot_of = boot_of
        self.settings = settings
        """The run's settings, the same for every recording (a unit's resolved config, as collect compares)."""
        self.keep_detections = keep_detections
        """File detections too (a threshold decided them); without one every window's top-k is no detection."""
        self.undated: list[Path] = []
        """Recordings without a start time: their windows are archived, but they have no place in the season."""

    def resume(self, state: Any) -> None:
        """Nothing to cut back: every file on disk is whole."""

    def checkpoint(self) -> Any:
        return None

    def close(self) -> None:
        """Every file is closed when written."""

    def write(self, piece: Piece, result: PieceResult) -> None:
        if result.error is not None or not result.window_starts:
            return
        start = self.start_utc(piece.path)
        if start is None:
            if piece.path not in self.undated:
                self.undated.append(piece.path)
            return
        clock = StreamClock(STREAM, epoch_us(start), 0, self.sample_rate, RECORDING_CLOCK)
        unit, boot = self.unit_of(piece.path), self.boot_of(piece.path)
        first, last = analysed_span(piece, result)
        day = clock.utc(first).date()
        part = first // self.sample_rate
        if first == 0:
            self._write_manifest(unit, boot, start)
        counter = EffortCounter()
        counter.add(clock, first, last)
        effort = [csv_line((row.minute_utc, unit, "", boot, row.stream, row.clock_sync, row.first_sample,
                            row.last_sample, row.analysed_s)) for row in counter.take_rows(final=True)]
        self._write_rows(EFFORT_DIR, segment_name(day, boot, part, "csv"), csv_line(EFFORT_COLUMNS), effort)
        if self.keep_detections and result.detections:
            rows = [csv_line((format_utc(clock.utc(d.start_sample)), format_utc(clock.utc(d.end_sample)), unit, "",
                              boot, STREAM, RECORDING_CLOCK, d.label, f"{d.score:.6g}", f"{d.cosine:.6g}",
                              d.start_sample, d.end_sample, d.start_sample, 1)) for d in result.detections]
            self._write_rows(DETECTIONS_DIR, segment_name(day, boot, part, "csv"), csv_line(DETECTION_COLUMNS), rows)
        events = []
        if first == 0:
            events.append(self._event(clock, unit, boot, OPEN_SEQ, 0, "stream_open",
                                      anchor_utc=format_utc(start), anchor_sample=0,
                                      recording=os.path.abspath(piece.path)))
        if piece.is_last_of_file:
            events.append(self._event(clock, unit, boot, CLOSE_SEQ, last, "log_close"))
        if events:
            self._write_rows(EVENTS_DIR, segment_name(day, boot, part, "jsonl"), b"", events)

    def _write_manifest(self, unit: str, boot: str, start: datetime) -> None:
        manifest = {"schema_version": SCHEMA_VERSION, "unit_id": unit, "deployment_id": "", "boot_id": boot,
                    "sample_rate": self.sample_rate, "wall_utc_at_boot": format_utc(start),
                    "settings_hash": "", "boot_info": self.settings}
        folder = self.root / BOOTS_DIR
        durable.make_dirs(folder)
        durable.atomic_write(folder / f"{boot}.json", json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))

    def _write_rows(self, kind: str, name: str, header: bytes, rows: list[bytes]) -> None:
        folder = self.root / kind
        durable.make_dirs(folder)
        durable.atomic_write(folder / name, header + b"".join(rows))

    @staticmethod
    def _event(clock: StreamClock, unit: str, boot: str, seq: int, sample: int, kind: str, **fields: Any) -> bytes:
        envelope = dict(zip(ENVELOPE_FIELDS, (format_utc(clock.utc(sample)), unit, "", boot, seq, STREAM,
                                              RECORDING_CLOCK, sample, kind)))
        return json_line({**envelope, **fields})


def analysed_span(piece: Piece, result: PieceResult) -> tuple[int, int]:
    """Samples ``[first, last)`` of the recording this piece analysed: its windows, cut at the piece's end
    (the next piece owns what lies beyond), so a recording's pieces add up to its length exactly."""
    first = min(result.window_starts)
    last = max(result.window_ends)
    if piece.length is not None and not piece.is_last_of_file:
        last = min(last, piece.start_sample + piece.length)
    return first, last
