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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from edge import durable
from edge.audio.recording_time import recording_start_utc
from edge.batch.piece_analysis import PieceResult
from edge.batch.pieces import Piece
from edge.batch.tables import (
    DEFAULT_FORMATS,
    BirdnetCsv,
    DetectionHistory,
    DetectionsCsv,
    RecordingTables,
    Selection,
)
from edge.card.recording_log import analysed_span, folder_unit
from edge.errors import ConfigError

WORKLOG_NAME = "analyze.worklog.jsonl"
HISTORY_STATE = ".detection_history.json"
"""The detection history so far (sets: a piece redone by ``--resume`` adds nothing twice), written each piece."""
WORKLOG_SCHEMA = 2


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


class WorkLog:
    """``OUT/analyze.worklog.jsonl``: a job line, then one line per finished piece (JSON, fsync'd)."""

    def __init__(self, out_dir: Path, fingerprint: str, resume: bool, settings: dict[str, Any] | None = None) -> None:
        """``settings``: the job's settings by name (JSON values), kept so a refused resume names what changed."""
        self.path = out_dir / WORKLOG_NAME
        self.entries: list[dict[str, Any]] = []
        self.settings = json.loads(json.dumps(settings or {}, sort_keys=True, default=str))
        if resume and self.path.exists():
            self._load(fingerprint)
        else:
            header = json.dumps({"schema": WORKLOG_SCHEMA, "job": fingerprint, "settings": self.settings})
            durable.atomic_write(self.path, (header + "\n").encode("utf-8"))

    def _changed(self, before: dict[str, Any]) -> str:
        """``threshold 12.0 -> 14.0, labels ...``: the settings that differ from the logged job's."""
        keys = sorted(k for k in set(before) | set(self.settings) if before.get(k) != self.settings.get(k))
        return ", ".join(f"{k} {before.get(k)!r} -> {self.settings.get(k)!r}" for k in keys)

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
            changed = self._changed(header["settings"]) if isinstance(header.get("settings"), dict) else ""
            raise ConfigError(f"{self.path} belongs to a different job ("
                              + (f"changed: {changed}" if changed else "other recordings, model, labels or settings")
                              + ")", "resume with the same arguments, or run without --resume to start over")
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
        durable.append_durably(self.path, (json.dumps(entry) + "\n").encode("utf-8"))
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
                 sinks: Sequence[PieceSink] = (), formats: Sequence[str] = DEFAULT_FORMATS,
                 scientific: dict[str, str] | None = None, site_of: Callable[[Path], str] = folder_unit) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.band_hz = band_hz
        self.files = files
        self.worklog = worklog
        self.sinks = sinks
        checkpoint = worklog.last_checkpoint
        self.csv = (DetectionsCsv(out_dir, resume_at=None if checkpoint is None else checkpoint["csv"])
                    if "csv" in formats else None)
        self.tables = RecordingTables(out_dir, formats, durable=True)
        self.birdnet = (BirdnetCsv(out_dir, resume_at=None if checkpoint is None else checkpoint.get("birdnet"))
                        if "birdnet" in formats else None)
        self.scientific = scientific or {}
        self.site_of = site_of
        self.history: DetectionHistory | None = None
        self._history_paths: list[Path] = []
        if "occupancy" in formats:
            state = out_dir / HISTORY_STATE
            self.history = DetectionHistory(json.loads(state.read_text(encoding="utf-8"))
                                            if checkpoint is not None and state.is_file() else None)
            self.history.know(self.scientific)
        self._last_tables: dict[str, Any] | None = None if checkpoint is None else checkpoint["tables"]
        if self._last_tables is not None:
            index = self._last_tables["file"]
            self.tables.resume(*self._identity(index), self._last_tables["positions"])
        self.totals = WriteTotals()
        self._starts: dict[int, datetime | None] = {}
        for entry in worklog.entries:
            self._count(entry["file"], entry["detections"], entry["error"])
        for sink in sinks:
            sink.resume(worklog.sink_state(sink.name))

    def _identity(self, file_index: int) -> tuple[str, str]:
        """(identity, display name) of a recording's tables: its absolute path (symlinks kept: two links to one
        sound are two recordings of the run) and its stem."""
        path = self.files[file_index]
        return os.path.abspath(path), path.stem

    def _count(self, file_index: int, detections: int, error: str | None) -> None:
        self.totals.detections += detections
        if error is not None:
            self.totals.failures.setdefault(file_index, error)

    def _start_utc(self, file_index: int) -> datetime | None:
        """UTC start of a recording, looked up once per file (all its pieces share it)."""
        if file_index not in self._starts:
            self._starts[file_index] = recording_start_utc(self.files[file_index])
        return self._starts[file_index]

    def _selections(self, piece: Piece, result: PieceResult) -> list[Selection]:
        start_utc = self._start_utc(piece.file_index)
        path = Path(os.path.abspath(piece.path))
        return [Selection(d.start_sample / self.rate, d.end_sample / self.rate, d.label, d.score, self.band_hz,
                          rank=d.rank, cosine=d.cosine, p_correct=d.p_correct, begin_path=str(path),
                          begin_file=path.name, scientific=self.scientific.get(d.label, ""),
                          utc=None if start_utc is None else start_utc + timedelta(seconds=d.start_sample / self.rate))
                for d in result.detections]

    def write(self, piece: Piece, result: PieceResult) -> None:
        """Store one piece (the next in plan order) in every output, then log it as done."""
        if piece.index != self.worklog.done:
            raise RuntimeError(f"piece {piece.index} arrived out of order (expected {self.worklog.done})")
        if result.index != piece.index:
            raise RuntimeError(f"result of piece {result.index} given for piece {piece.index}")
        if result.error is None:
            selections = self._selections(piece, result)
            if self.csv is not None:
                self.csv.write(str(piece.path), selections)
                self.csv.sync()
            identity = self._identity(piece.file_index)
            self.tables.write(*identity, selections)
            self._last_tables = {"file": piece.file_index, "positions": self.tables.checkpoint(*identity)}
            if self.birdnet is not None:
                self.birdnet.write(identity[0], selections)
                self.birdnet.sync()
            self._history(piece, result, selections)
        for sink in self.sinks:
            sink.write(piece, result)
        outputs = {"csv": None if self.csv is None else self.csv.position(), "tables": self._last_tables,
                   "birdnet": None if self.birdnet is None else self.birdnet.position(),
                   "sinks": {sink.name: sink.checkpoint() for sink in self.sinks}}
        self.worklog.record(piece, result, outputs)
        self._count(piece.file_index, len(result.detections), result.error)

    def _history(self, piece: Piece, result: PieceResult, selections: list[Selection]) -> None:
        """The piece's listening and detections in the site × day history (recordings with a start time)."""
        start = self._start_utc(piece.file_index)
        if self.history is None or start is None or not result.window_starts:
            return
        site = self.site_of(piece.path)
        first, last = analysed_span(piece, result)
        self.history.listen(site, start + timedelta(seconds=first / self.rate),
                            start + timedelta(seconds=max(first, last - 1) / self.rate))
        for selection in selections:
            if selection.utc is not None:
                self.history.detect(site, selection.utc, selection.label)
        durable.atomic_write(self.out_dir / HISTORY_STATE, json.dumps(self.history.state()).encode("utf-8"))

    @property
    def history_paths(self) -> list[Path]:
        """The detection histories (written by :meth:`close`)."""
        return self._history_paths

    def close(self) -> None:
        self._history_paths = [] if self.history is None else self.history.write(self.out_dir)
        if self.birdnet is not None:
            self.birdnet.close()
        if self.csv is not None:
            self.csv.close()
        for sink in self.sinks:
            sink.close()
