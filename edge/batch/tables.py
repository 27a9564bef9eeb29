"""Offline analysis outputs: one detections CSV for a run and a Raven selection table per recording."""

from __future__ import annotations

import csv
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from edge.stream.detector import Detection

DETECTIONS_CSV = "detections.csv"
CSV_COLUMNS = ("file", "start_s", "end_s", "label", "score", "cosine", "rank", "start_utc", "p_correct")
"""``p_correct``: fitted probability that the label is right (empty where the label has no confidence)."""
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                 "Low Freq (Hz)", "High Freq (Hz)", "Species", "Score", "Rank", "Begin Path")
"""``Begin Path`` (the recording's absolute path) lets Raven open the sound with the table."""
RAVEN_SUFFIX = ".BioLingual.selection.table.txt"


def seconds(samples: int, sample_rate: int) -> str:
    """Sample index -> seconds with millisecond resolution (conversion happens only at sinks)."""
    return f"{samples / sample_rate:.3f}"


def _reopen(path: Path, resume_at: int | None) -> TextIO:
    """A new file, or (``resume_at``) the existing one cut back to that many bytes, positioned at its end."""
    if resume_at is None:
        return open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    handle = open(path, "r+", newline="", encoding="utf-8")  # noqa: SIM115
    handle.truncate(resume_at)
    handle.seek(resume_at)
    return handle


class _AppendedTable:
    """A text table written row by row, made durable after each piece, cut back to a checkpoint on resume."""

    def __init__(self, path: Path, resume_at: int | None, delimiter: str, lineterminator: str) -> None:
        self.path = path
        self._handle: TextIO = _reopen(path, resume_at)
        self._writer = csv.writer(self._handle, delimiter=delimiter, lineterminator=lineterminator)

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def position(self) -> int:
        """Bytes written so far (all durable after ``write``)."""
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()


class DetectionsCsv(_AppendedTable):
    """Appends one row per detection to ``detections.csv``; flushed after every recording.

    ``resume_at``: continue an interrupted run's file, cut back to this many bytes (a work-log checkpoint).
    """

    def __init__(self, out_dir: Path, sample_rate: int, resume_at: int | None = None) -> None:
        super().__init__(out_dir / DETECTIONS_CSV, resume_at, ",", "\r\n")
        self.sample_rate = sample_rate
        if resume_at is None:
            self._writer.writerow(CSV_COLUMNS)

    def write(self, recording: Path, detections: list[Detection], start_utc: datetime | None) -> None:
        for d in detections:
            utc = (start_utc + timedelta(seconds=d.start_sample / self.sample_rate)).isoformat() if start_utc else ""
            self._writer.writerow([str(recording), seconds(d.start_sample, self.sample_rate),
                                   seconds(d.end_sample, self.sample_rate), d.label, f"{d.score:.6g}",
                                   f"{d.cosine:.6g}", d.rank, utc,
                                   "" if d.p_correct is None else f"{d.p_correct:.4f}"])
        self._sync()


class RavenTable(_AppendedTable):
    """A Raven Pro selection table (tab-separated, one selection per detection), appended to in pieces.

    ``resume_at`` = (bytes, selections) continues an interrupted table cut back to that checkpoint.
    """

    def __init__(self, path: Path, sample_rate: int, low_hz: float, high_hz: float, recording: Path | None = None,
                 resume_at: tuple[int, int] | None = None) -> None:
        super().__init__(path, None if resume_at is None else resume_at[0], "\t", "\n")
        self.sample_rate = sample_rate
        self.begin_path = str(recording.resolve()) if recording else ""
        self.low_hz = low_hz
        self.high_hz = high_hz
        self.selections = 0 if resume_at is None else resume_at[1]
        if resume_at is None:
            self._writer.writerow(RAVEN_COLUMNS)

    def write(self, detections: list[Detection]) -> None:
        for d in detections:
            self.selections += 1
            self._writer.writerow([self.selections, "Spectrogram 1", 1, seconds(d.start_sample, self.sample_rate),
                                   seconds(d.end_sample, self.sample_rate), f"{self.low_hz:g}", f"{self.high_hz:g}",
                                   d.label, f"{d.score:.6g}", d.rank, self.begin_path])
        self._sync()


def remove_stale_tables(out_dir: Path) -> list[Path]:
    """Delete Raven tables an earlier run left in ``out_dir`` (only ours: the BioLingual suffix)."""
    stale = sorted(out_dir.glob("*" + RAVEN_SUFFIX))
    for path in stale:
        path.unlink()
    return stale
