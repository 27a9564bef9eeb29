"""The one writer of an ``analyze`` run: pieces' results in plan order -> detections.csv, Raven tables, work log.

Only this object touches the outputs, so rows of different workers never interleave. After each piece it
makes the outputs durable, then appends a line to the work log with their sizes; ``--resume`` cuts every
output back to the last logged line and continues with the first piece not logged, so a killed run neither
redoes a logged piece nor duplicates a row.

Other outputs (an embedding archive, say) plug in as :class:`PieceSink`: written after the built-in ones,
their ``checkpoint()`` is stored in the same log line and handed back to ``resume()`` when the writer opens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from edge.audio.recording_time import recording_start_utc
from edge.batch.piece_analysis import PieceResult
from edge.batch.pieces import Piece
from edge.batch.tables import RAVEN_SUFFIX, DetectionsCsv, RavenTable
from edge.errors import ConfigError

WORKLOG_NAME = "analyze.worklog.jsonl"
WORKLOG_SCHEMA = 1


class PieceSink(Protocol):
    """An extra output of an analyze run (e.g. an embedding archive), fed by the single writer in plan order."""

    name: str

    def resume(self, state: Any) -> None:
        """Called once before any write: ``state`` is what ``checkpoint()`` returned at the last logged piece
        (None when the run starts over); cut the output back to it, since later writes were never logged."""

    def write(self, piece: Piece, result: PieceResult) -> None:
        """Store one piece's results durably (flushed and fsync'd) before returning."""

    def checkpoint(self) -> Any:
        """JSON-serialisable state after the last write, from which a resumed run continues."""

    def close(self) -> None: ...


def job_fingerprint(description: dict[str, Any], pieces: list[Piece]) -> str:
    """Hash of what decides the outputs (model, labels, settings, the piece plan): a resume must match it."""
    text = json.dumps({"job": description, "pieces": [u.key for u in pieces]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def table_names(files: list[Path]) -> list[str]:
    """One Raven table file name per recording, numbered when two recordings share a stem."""
    used: set[str] = set()
    names = []
    for path in files:
        name = path.stem + RAVEN_SUFFIX
        counter = 2
        while name in used:
            name = f"{path.stem}_{counter}{RAVEN_SUFFIX}"
            counter += 1
        used.add(name)
        names.append(name)
    return names


def _fsync_append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class WorkLog:
    """``OUT/analyze.worklog.jsonl``: a job line, then one line per finished piece (JSON, fsync'd)."""

    def __init__(self, out_dir: Path, fingerprint: str, resume: bool) -> None:
        self.path = out_dir / WORKLOG_NAME
        self.entries: list[dict[str, Any]] = []
        if resume and self.path.exists():
            self._load(fingerprint)
        else:
            self.path.write_text("", encoding="utf-8")
            _fsync_append(self.path, json.dumps({"schema": WORKLOG_SCHEMA, "job": fingerprint}))

    def _load(self, fingerprint: str) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # a line torn by a kill was never acknowledged: drop it
        lines = complete.decode("utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
            self.entries = [json.loads(line) for line in lines[1:]]
        except json.JSONDecodeError as e:
            raise ConfigError(f"{self.path} is not a work log ({e})",
                              "run again without --resume to start over") from e
        if header.get("job") != fingerprint:
            raise ConfigError(f"{self.path} belongs to a different job (other recordings, model, labels or settings)",
                              "resume with the same arguments, or run without --resume to start over")
        with open(self.path, "r+b") as handle:
            handle.truncate(len(complete))

    @property
    def done(self) -> int:
        """Pieces finished so far; they are always the first ones of the plan."""
        return len(self.entries)

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        return self.entries[-1]["outputs"] if self.entries else None

    def sink_state(self, name: str) -> Any:
        """What a :class:`PieceSink` called ``name`` returned from ``checkpoint()`` at the last logged piece."""
        checkpoint = self.last_checkpoint
        return None if checkpoint is None else checkpoint["sinks"].get(name)

    def record(self, piece: Piece, result: PieceResult, outputs: dict[str, Any]) -> None:
        entry = {"piece": piece.key, "file": piece.file_index, "detections": len(result.detections),
                 "error": result.error, "outputs": outputs}
        _fsync_append(self.path, json.dumps(entry))
        self.entries.append(entry)


@dataclass
class WriteTotals:
    """What the run produced, counted over resumed and new pieces alike."""

    detections: int = 0
    failures: dict[int, str] = field(default_factory=dict)
    """First error per file index."""


class AnalysisWriter:
    """Writes pieces' results strictly in plan order (see module docstring)."""

    def __init__(self, out_dir: Path, rate: int, band_hz: tuple[float, float], files: list[Path], worklog: WorkLog,
                 sinks: Sequence[PieceSink] = ()) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.band_hz = band_hz
        self.files = files
        self.worklog = worklog
        self.sinks = sinks
        self.names = table_names(files)
        checkpoint = worklog.last_checkpoint
        self.csv = DetectionsCsv(out_dir, rate, resume_at=None if checkpoint is None else checkpoint["csv"])
        self._resume_table: dict[str, int] | None = None if checkpoint is None else checkpoint["raven"]
        self._table: RavenTable | None = None
        self._table_file: int | None = None
        self.totals = WriteTotals()
        self._starts: dict[int, datetime | None] = {}
        for entry in worklog.entries:
            self._count(entry["file"], entry["detections"], entry["error"])
        for sink in sinks:
            sink.resume(worklog.sink_state(sink.name))

    def _count(self, file_index: int, detections: int, error: str | None) -> None:
        self.totals.detections += detections
        if error is not None:
            self.totals.failures.setdefault(file_index, error)

    def _start_utc(self, file_index: int) -> datetime | None:
        """UTC start of a recording, looked up once per file (all its pieces share it)."""
        if file_index not in self._starts:
            self._starts[file_index] = recording_start_utc(self.files[file_index])
        return self._starts[file_index]

    def _table_for(self, file_index: int) -> RavenTable:
        if self._table is not None and self._table_file == file_index:
            return self._table
        if self._table is not None:
            self._table.close()
        resume = self._resume_table
        at = (resume["bytes"], resume["rows"]) if resume is not None and resume["file"] == file_index else None
        self._table = RavenTable(self.out_dir / self.names[file_index], self.rate, *self.band_hz,
                                 recording=self.files[file_index], resume_at=at)
        self._table_file = file_index
        return self._table

    def write(self, piece: Piece, result: PieceResult) -> None:
        """Store one piece (the next in plan order) in every output, then log it as done."""
        if piece.index != self.worklog.done:
            raise RuntimeError(f"piece {piece.index} arrived out of order (expected {self.worklog.done})")
        if result.index != piece.index:
            raise RuntimeError(f"result of piece {result.index} given for piece {piece.index}")
        detections = list(result.detections)
        raven = None
        if result.error is None:
            self.csv.write(piece.path, detections, self._start_utc(piece.file_index))
            table = self._table_for(piece.file_index)
            table.write(detections)
            raven = {"file": piece.file_index, "bytes": table.position(), "rows": table.selections}
        for sink in self.sinks:
            sink.write(piece, result)
        outputs = {"csv": self.csv.position(), "raven": raven or self._last_raven(),
                   "sinks": {sink.name: sink.checkpoint() for sink in self.sinks}}
        self.worklog.record(piece, result, outputs)
        self._count(piece.file_index, len(detections), result.error)

    def _last_raven(self) -> dict[str, int] | None:
        checkpoint = self.worklog.last_checkpoint
        return None if checkpoint is None else checkpoint["raven"]

    def close(self) -> None:
        self.csv.close()
        if self._table is not None:
            self._table.close()
        for sink in self.sinks:
            sink.close()
