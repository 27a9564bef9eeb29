"""Offline analysis outputs: one detections CSV for a run and a Raven selection table per recording."""

from __future__ import annotations

import csv
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from edge.detect import Detection

DETECTIONS_CSV = "detections.csv"
CSV_COLUMNS = ("file", "start_s", "end_s", "label", "score", "cosine", "rank", "start_utc")
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                 "Low Freq (Hz)", "High Freq (Hz)", "Species", "Score", "Rank", "Begin Path")
"""``Begin Path`` (the recording's absolute path) lets Raven open the sound with the table."""
RAVEN_SUFFIX = ".BioLingual.selection.table.txt"


def seconds(samples: int, sample_rate: int) -> str:
    """Sample index -> seconds with millisecond resolution (conversion happens only at sinks)."""
    return f"{samples / sample_rate:.3f}"


class DetectionsCsv:
    """Appends one row per detection to ``detections.csv``; flushed after every recording."""

    def __init__(self, out_dir: Path, sample_rate: int) -> None:
        self.path = out_dir / DETECTIONS_CSV
        self.sample_rate = sample_rate
        self._handle: TextIO = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._writer = csv.writer(self._handle)
        self._writer.writerow(CSV_COLUMNS)

    def write(self, recording: Path, detections: list[Detection], start_utc: datetime | None) -> None:
        for d in detections:
            utc = (start_utc + timedelta(seconds=d.start_sample / self.sample_rate)).isoformat() if start_utc else ""
            self._writer.writerow([str(recording), seconds(d.start_sample, self.sample_rate),
                                   seconds(d.end_sample, self.sample_rate), d.label, f"{d.score:.6g}",
                                   f"{d.cosine:.6g}", d.rank, utc])
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def remove_stale_tables(out_dir: Path) -> list[Path]:
    """Delete Raven tables an earlier run left in ``out_dir`` (only ours: the BioLingual suffix)."""
    stale = sorted(out_dir.glob("*" + RAVEN_SUFFIX))
    for path in stale:
        path.unlink()
    return stale


def write_raven_table(path: Path, detections: list[Detection], sample_rate: int,
                      low_hz: float, high_hz: float, recording: Path | None = None) -> None:
    """Raven Pro selection table (tab-separated, one selection per detection) of ``recording``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(RAVEN_COLUMNS)
        for number, d in enumerate(detections, start=1):
            writer.writerow([number, "Spectrogram 1", 1, seconds(d.start_sample, sample_rate),
                             seconds(d.end_sample, sample_rate), f"{low_hz:g}", f"{high_hz:g}",
                             d.label, f"{d.score:.6g}", d.rank, str(recording.resolve()) if recording else ""])
