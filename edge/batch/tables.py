"""The one writer of result tables, for ``analyze``, ``logs rescore`` and ``logs export`` alike.

It owns every format those commands share, so the three cannot drift apart:

- ``--format`` (:data:`FORMATS`, comma-separated, the same option and values in all three commands);
- ``detections.csv``: :data:`CSV_COLUMNS` in one dialect (``,``, minimal quoting, ``\\n`` line ends);
- the Raven Pro selection table: :data:`RAVEN_COLUMNS` (tab-separated, frequencies as decimals: ``50.0``);
- the Audacity label track: ``start<TAB>end<TAB>label (score)``, no header;
- BirdNET-Analyzer's combined table: :data:`BIRDNET_COLUMNS` in ``BirdNET_CombinedTable.csv``;
- a site × day detection history per label (:class:`DetectionHistory`): 1 detected, 0 listened without a
  detection, ``NA`` not listened, as occupancy models (R ``unmarked``, ``occupancy``) read it;
- file names unique by construction (:class:`TableNames`).

Tables are appended to in pieces and can be cut back to a checkpoint, which is how ``analyze --resume``
continues byte for byte. It runs on a recorder. Rows come one :class:`Selection` at a time, or (``logs
rescore`` of a season, a million rows) as columns, formatted a column at a time by :mod:`edge.batch.table_text`
into the same bytes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge.batch.cli_defaults import DEFAULT_FORMATS as DEFAULT_FORMATS
from edge.batch.cli_defaults import FORMAT_HELP as FORMAT_HELP
from edge.batch.table_text import SelectionColumns, csv_text, raven_text
from edge.card.cardformat import NAME_HASH_CHARS, unique_name
from edge.errors import ConfigError

FORMATS = ("csv", "raven", "audacity", "birdnet", "occupancy", "parquet")
"""Output types of ``--format``: csv (``detections.csv``; ``logs export``: the tidy table with provenance),
raven (selection tables), audacity (label tracks), birdnet (BirdNET-Analyzer's combined CSV), occupancy (a site ×
day detection history per label), parquet (``logs export`` only)."""
DETECTIONS_CSV = "detections.csv"
CSV_COLUMNS = ("file", "start_s", "end_s", "label", "score", "cosine", "rank", "start_utc", "p_correct")
"""``p_correct``: fitted probability that the label is right (empty where the label has no confidence)."""
CSV_DIALECT: dict[str, Any] = {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL, "lineterminator": "\n"}
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Species", "Score", "Rank", "p_correct", "Begin Path", "Begin File",
                 "File Offset (s)", "Begin Date Time (UTC)", "Clock Sync")
"""``Begin Path`` (absolute, empty where no audio file exists, e.g. a unit's stream) lets Raven open the sound;
``File Offset (s)`` is where the selection starts in that file."""
BIRDNET_CSV = "BirdNET_CombinedTable.csv"
BIRDNET_COLUMNS = ("Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File")
"""BirdNET-Analyzer's ``--rtype csv`` columns with ``File``, as its combined table has them. ``Confidence`` is
``p_correct`` where the label has a confidence fit (0-1, as BirdNET's), else the score of the run's mode."""
HISTORY_DIR = "detection_history"
"""Folder of the detection histories: ``<label>.csv`` per label, rows = sites (units), columns = UTC days."""
NOT_LISTENED = "NA"
RAVEN_SUFFIX = ".BioLingual.selection.table.txt"
AUDACITY_SUFFIX = ".audacity-labels.txt"
TABLE_FORMATS = ("raven", "audacity")
"""The formats written as one file per recording (or per unit / stream in ``logs export``)."""


def parse_formats(text: str, allowed: Sequence[str], command: str) -> tuple[str, ...]:
    """``--format csv,raven`` -> ("csv", "raven"); a value ``command`` does not write is a one-line error."""
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    wrong = [f for f in chosen if f not in allowed]
    if wrong or not chosen:
        what = f"unknown --format {wrong[0]!r}" if wrong else "--format names no output type"
        raise ConfigError(f"{what} for {command}",
                          f"{command} writes {', '.join(allowed)} (comma-separated, e.g. --format csv,raven)")
    return chosen


def seconds(samples: int, sample_rate: int) -> str:
    """Sample index -> seconds with millisecond resolution (conversion happens only at sinks)."""
    return f"{samples / sample_rate:.3f}"


def p_correct_text(value: float | None) -> str:
    """``p_correct`` as every table writes it: 4 decimals, empty (never ``nan``) where the label has no fit."""
    return "" if value is None or value != value else f"{value:.4f}"


@dataclass(frozen=True)
class Selection:
    """One detection as every table shows it; times in seconds on the table's time line."""

    begin_s: float
    end_s: float
    label: str
    score: float
    band_hz: tuple[float, float]
    """Low and High Freq: the band the model hears (the bundle's frontend f_min..f_max)."""
    rank: int = 1
    cosine: float | None = None
    p_correct: float | None = None
    begin_path: str = ""
    begin_file: str = ""
    file_offset_s: float | None = None
    """Seconds into ``begin_path`` (None: ``begin_s``, the table's time line is the file's)."""
    utc: datetime | None = None
    """When the selection starts (naive values are UTC)."""
    clock_sync: str = ""
    scientific: str = ""
    """The label's scientific name, where the label file gives one."""


def selections(c: SelectionColumns, first: int = 0, stop: int | None = None) -> list[Selection]:
    """Rows ``first:stop`` of ``c`` as :class:`Selection` objects (for the tables without a column path)."""
    epoch = datetime(1970, 1, 1)
    return [Selection(float(c.begin_s[i]), float(c.end_s[i]), c.labels[c.label[i]], float(c.score[i]), c.band_hz,
                      int(c.rank[i]), float(c.cosine[i]), None if np.isnan(c.p_correct[i]) else float(c.p_correct[i]),
                      c.begin_paths[c.source[i]], c.begin_files[c.source[i]],
                      utc=epoch + timedelta(microseconds=int(c.utc_us[i])) if c.utc_known[i] else None,
                      scientific=c.scientific[c.label[i]])
            for i in range(first, len(c.source) if stop is None else stop)]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def csv_row(recording: str, s: Selection) -> list[object]:
    """A :data:`CSV_COLUMNS` row."""
    return [recording, f"{s.begin_s:.3f}", f"{s.end_s:.3f}", s.label, f"{s.score:.6g}",
            "" if s.cosine is None else f"{s.cosine:.6g}", s.rank, "" if s.utc is None else _utc(s.utc).isoformat(),
            p_correct_text(s.p_correct)]


def raven_row(number: int, s: Selection) -> list[object]:
    """A :data:`RAVEN_COLUMNS` row for selection ``number`` (1-based)."""
    offset = s.begin_s if s.file_offset_s is None else s.file_offset_s
    when = "" if s.utc is None else _utc(s.utc).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return [number, "Spectrogram 1", 1, f"{s.begin_s:.3f}", f"{s.end_s:.3f}", str(float(s.band_hz[0])),
            str(float(s.band_hz[1])), s.label, f"{s.score:.6g}", s.rank,
            p_correct_text(s.p_correct), s.begin_path, s.begin_file, f"{offset:.3f}", when,
            s.clock_sync]


def birdnet_row(file: str, s: Selection) -> list[object]:
    """A :data:`BIRDNET_COLUMNS` row."""
    confidence = s.score if s.p_correct is None else s.p_correct
    return [f"{s.begin_s:.3f}", f"{s.end_s:.3f}", s.scientific, s.label, f"{confidence:.4f}", file]


def audacity_row(s: Selection) -> list[object]:
    """An Audacity label: start, end (seconds) and ``label (score)``."""
    return [f"{s.begin_s:.6f}", f"{s.end_s:.6f}", f"{s.label} ({s.score:.3g})"]


def _reopen(path: Path, resume_at: int | None) -> TextIO:
    """A new file, or (``resume_at``) the existing one cut back to that many bytes, positioned at its end."""
    if resume_at is None:
        return open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    handle = open(path, "r+", newline="", encoding="utf-8")  # noqa: SIM115
    handle.truncate(resume_at)
    handle.seek(resume_at)
    return handle


class _AppendedTable:
    """A text table written row by row, cut back to a checkpoint when reopened with ``resume_at``."""

    def __init__(self, path: Path, resume_at: int | None, **dialect: Any) -> None:
        self.path = path
        self._handle: TextIO = _reopen(path, resume_at)
        self._writer = csv.writer(self._handle, **dialect)

    def _write_bytes(self, text: bytes | memoryview) -> None:
        """UTF-8 rows made a column at a time, written as they are (no round trip through ``str``)."""
        self._handle.flush()
        self._handle.buffer.write(text)

    def sync(self) -> None:
        """Make everything written so far durable (flush + fsync)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def position(self) -> int:
        """Bytes written so far."""
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()


class DetectionsCsv(_AppendedTable):
    """``detections.csv``: one :data:`CSV_COLUMNS` row per selection of the run.

    ``resume_at``: continue an interrupted run's file, cut back to this many bytes (a work-log checkpoint).
    """

    def __init__(self, out_dir: Path, resume_at: int | None = None) -> None:
        super().__init__(out_dir / DETECTIONS_CSV, resume_at, **CSV_DIALECT)
        if resume_at is None:
            self._writer.writerow(CSV_COLUMNS)

    def write(self, recording: str, selections: Iterable[Selection]) -> None:
        self._writer.writerows(csv_row(recording, s) for s in selections)

    def write_columns(self, columns: SelectionColumns) -> None:
        """Every selection of ``columns`` (the file column is each row's source), as :meth:`write` would."""
        if not columns.plain:
            for source, first, stop in columns.runs():
                self.write(columns.sources[source], selections(columns, first, stop))
            return
        self._write_bytes(csv_text(columns, CSV_DIALECT))


class BirdnetCsv(_AppendedTable):
    """``BirdNET_CombinedTable.csv``: one :data:`BIRDNET_COLUMNS` row per selection (``resume_at``: bytes kept)."""

    def __init__(self, out_dir: Path, resume_at: int | None = None) -> None:
        super().__init__(out_dir / BIRDNET_CSV, resume_at, **CSV_DIALECT)
        if resume_at is None:
            self._writer.writerow(BIRDNET_COLUMNS)

    def write(self, file: str, selections: Iterable[Selection]) -> None:
        self._writer.writerows(birdnet_row(file, s) for s in selections)


class DetectionHistory:
    """Per label, a site × day detection history: ``1`` (detected that day), ``0`` (listened, not detected),
    ``NA`` (not listened: unknown, never 0). Days are UTC calendar days from the first to the last day any site
    listened; sites are units (for recordings on disk, their site folder). Sets only, so adding the same piece
    twice (a resumed run) changes nothing.
    """

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.listened: set[tuple[str, str]] = {tuple(x) for x in (state or {}).get("listened", [])}  # type: ignore[misc]
        self.detected: set[tuple[str, str, str]] = {tuple(x) for x in (state or {}).get("detected", [])}  # type: ignore[misc]
        self.labels: set[str] = set((state or {}).get("labels", []))

    def listen(self, site: str, first: datetime, last: datetime) -> None:
        """``site`` listened from ``first`` to ``last`` (every UTC day they touch)."""
        day, end = _utc(first).date(), _utc(last).date()
        while day <= end:
            self.listened.add((site, day.isoformat()))
            day += timedelta(days=1)

    def detect(self, site: str, moment: datetime, label: str) -> None:
        self.detected.add((site, _utc(moment).date().isoformat(), label))

    def know(self, labels: Iterable[str]) -> None:
        """Labels that get a table even when never detected (a column of 0 and NA is a result too)."""
        self.labels.update(labels)

    def state(self) -> dict[str, Any]:
        return {"listened": sorted(self.listened), "detected": sorted(self.detected), "labels": sorted(self.labels)}

    def write(self, out_dir: Path) -> list[Path]:
        """``out_dir/detection_history/<label>.csv`` for every label; returns the paths."""
        folder = out_dir / HISTORY_DIR
        folder.mkdir(parents=True, exist_ok=True)
        days = sorted({d for _, d in self.listened} | {d for _, d, _ in self.detected})
        if days:
            first, last = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
            days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
        sites = sorted({s for s, _ in self.listened} | {s for s, _, _ in self.detected})
        names = TableNames()
        paths = []
        for label in sorted(self.labels | {lab for _, _, lab in self.detected}):
            path = folder / f"{names.stem(label, label)}.csv"
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, **CSV_DIALECT)
                writer.writerow(["site", *days])
                for site in sites:
                    writer.writerow([site, *("1" if (site, d, label) in self.detected else
                                             "0" if (site, d) in self.listened else NOT_LISTENED for d in days)])
            paths.append(path)
        return paths


class RavenTable(_AppendedTable):
    """A Raven Pro selection table (one :data:`RAVEN_COLUMNS` row per selection), appended to in pieces.

    ``resume_at`` = (bytes, selections) continues a table cut back to that checkpoint.
    """

    def __init__(self, path: Path, resume_at: tuple[int, int] | None = None) -> None:
        super().__init__(path, None if resume_at is None else resume_at[0], delimiter="\t", lineterminator="\n")
        self.selections = 0 if resume_at is None else resume_at[1]
        if resume_at is None:
            self._writer.writerow(RAVEN_COLUMNS)

    def write(self, selections: Iterable[Selection]) -> None:
        for s in selections:
            self.selections += 1
            self._writer.writerow(raven_row(self.selections, s))

    def write_text(self, text: bytes | memoryview, rows: int) -> None:
        """``rows`` rows made by :func:`edge.batch.table_text.raven_text`, numbered from ``selections + 1``."""
        self._write_bytes(text)
        self.selections += rows


class AudacityTrack(_AppendedTable):
    """An Audacity label track (no header), appended to in pieces; ``resume_at``: bytes to keep."""

    def __init__(self, path: Path, resume_at: int | None = None) -> None:
        super().__init__(path, resume_at, delimiter="\t", lineterminator="\n")

    def write(self, selections: Iterable[Selection]) -> None:
        self._writer.writerows(audacity_row(s) for s in selections)


class TableNames:
    """File stems unique by construction: :func:`~edge.card.cardformat.unique_name` (the rule the card's clip
    folders use), with a longer hash when the stem (compared case-insensitively) is taken.

    ``u1`` and ``u1_`` (both sanitise to ``u1``) get ``u1`` and ``u1-<hash>``; ``a/x.wav`` and ``b/x.wav``
    get ``x`` and ``x-<hash of b/x.wav>``. The same identities in the same order always get the same stems.
    """

    def __init__(self) -> None:
        self._stems: dict[str, str] = {}
        self._taken: set[str] = set()

    def stem(self, identity: str, display: str) -> str:
        if identity in self._stems:
            return self._stems[identity]
        stem = unique_name(display, identity)
        length = 0
        while stem.casefold() in self._taken:
            length += NAME_HASH_CHARS
            stem = unique_name(display, identity, length)
        self._taken.add(stem.casefold())
        self._stems[identity] = stem
        return stem


class RecordingTables:
    """One Raven table and/or Audacity track per recording (or unit, or stream), in any order of recordings.

    Each write reopens the recording's files at their last position and closes them again, so an archive of
    thousands of recordings holds no file open and only a few integers per recording in memory.
    ``durable``: fsync after every write (``analyze``'s work log relies on it).
    """

    def __init__(self, out_dir: Path, formats: Iterable[str], durable: bool = False) -> None:
        self.out_dir = out_dir
        self.formats = tuple(f for f in TABLE_FORMATS if f in formats)
        self.durable = durable
        self.names = TableNames()
        self._positions: dict[str, dict[str, Any]] = {}
        self.paths: list[Path] = []

    def path(self, stem: str, file_format: str) -> Path:
        return self.out_dir / (stem + (RAVEN_SUFFIX if file_format == "raven" else AUDACITY_SUFFIX))

    def resume(self, identity: str, display: str, checkpoint: dict[str, Any]) -> None:
        """Continue a recording's tables from a :meth:`checkpoint` (later bytes are cut off at the next write)."""
        stem = self.names.stem(identity, display)
        self._positions[stem] = {k: v for k, v in checkpoint.items() if k in self.formats}

    def write(self, identity: str, display: str, selections: Sequence[Selection]) -> str:
        """Append a recording's selections (none: create its tables with their headers); returns its stem."""
        stem = self.names.stem(identity, display)
        self._append(stem, lambda table: table.write(selections))
        return stem

    def write_columns(self, c: SelectionColumns) -> None:
        """Every run of ``c`` appended to its source's tables, as :meth:`write` of each run would (Raven rows are
        formatted for all runs at once)."""
        runs = c.runs()
        if not c.plain:
            for source, first, stop in runs:
                self.write(c.sources[source], c.displays[source], selections(c, first, stop))
            return
        stems = [self.names.stem(c.sources[source], c.displays[source]) for source, _, _ in runs]
        text, offsets = memoryview(b""), np.zeros(len(c.source) + 1, np.int64)
        if "raven" in self.formats:
            numbers = np.arange(1, len(c.source) + 1, dtype=np.int64)
            written: dict[str, int] = {}  # selections in each table before this run (a source may recur)
            for stem, (_, first, stop) in zip(stems, runs):
                at = self._positions.get(stem, {}).get("raven")
                before = written.get(stem, 0 if at is None else at[1])
                numbers[first:stop] += before - first
                written[stem] = before + stop - first
            text, offsets = raven_text(c, numbers)
        for stem, (_, first, stop) in zip(stems, runs):
            run = text[offsets[first] : offsets[stop]]

            def write(table: RavenTable | AudacityTrack, first: int = first, stop: int = stop,
                      run: memoryview = run) -> None:
                if isinstance(table, RavenTable):
                    table.write_text(run, stop - first)
                else:
                    table.write(selections(c, first, stop))

            self._append(stem, write)

    def _append(self, stem: str, write: Callable[[RavenTable | AudacityTrack], object]) -> None:
        """Open each table of ``stem`` at its last position, ``write`` to it, remember where it ends, close it."""
        known = self._positions.setdefault(stem, {})
        for file_format in self.formats:
            at = known.get(file_format)
            path = self.path(stem, file_format)
            if at is None:
                self.paths.append(path)
            table: RavenTable | AudacityTrack = (RavenTable(path, None if at is None else (at[0], at[1]))
                                                 if file_format == "raven" else AudacityTrack(path, at))
            try:
                write(table)
                if self.durable:
                    table.sync()
                known[file_format] = ((table.position(), table.selections) if isinstance(table, RavenTable)
                                      else table.position())
            finally:
                table.close()

    def checkpoint(self, identity: str, display: str) -> dict[str, Any]:
        """JSON-serialisable positions of a recording's tables after the last write."""
        return dict(self._positions.get(self.names.stem(identity, display), {}))


def remove_stale_tables(out_dir: Path) -> list[Path]:
    """Delete the tables an earlier run left in ``out_dir`` (only ours: our suffixes and detections.csv)."""
    stale = sorted([*out_dir.glob("*" + RAVEN_SUFFIX), *out_dir.glob("*" + AUDACITY_SUFFIX),
                    *out_dir.glob(DETECTIONS_CSV), *out_dir.glob(BIRDNET_CSV), *out_dir.glob(f"{HISTORY_DIR}/*.csv")])
    for path in stale:
        path.unlink()
    return stale
