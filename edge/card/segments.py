"""Append-only segment files that survive power loss, and readers that tolerate what a power cut leaves behind.

A segment is written in whole lines, fsync'd per batch, under a ``.part`` name; it is sealed by an atomic
rename. A failed write (full card) truncates the file back to its last good size, so the card never holds a
half line that a later append would glue onto.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from edge import durable
from edge.card.cardformat import OPEN_SUFFIX, segment_name

MAX_SEGMENT_BYTES = 64 * 1024 * 1024
"""A segment larger than this is sealed and the next part started (keeps files easy to open)."""


class AppendSegment:
    """One ``.part`` file appended to in whole lines; created on the first successful append."""

    def __init__(self, final_path: Path, header: bytes) -> None:
        self.final_path = final_path
        self.open_path = final_path.with_name(final_path.name + OPEN_SUFFIX)
        self.header = header
        self.size = 0
        self._fd: int | None = None

    def append(self, data: bytes) -> None:
        """Write ``data`` and fsync. On ``OSError`` the file is cut back to its previous size and the error raised."""
        created = self._fd is None
        fd = os.open(self.open_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if self._fd is None else self._fd
        self._fd = fd
        view = memoryview(self.header + data if created else data)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if created:
                durable.fsync_path(self.open_path.parent)
        except OSError:
            self._undo(fd, created)
            raise
        self.size += len(self.header) + len(data) if created else len(data)

    def _undo(self, fd: int, created: bool) -> None:
        """Cut the file back to its last good size; a file that never got a whole line is removed."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, self.size)
        if created:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                self.open_path.unlink()
            self._fd = None

    def seal(self) -> None:
        """Close and rename ``X.part`` -> ``X`` atomically (nothing to do if nothing was ever written)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        os.replace(self.open_path, self.final_path)
        durable.fsync_path(self.final_path.parent)


@dataclass
class PendingLines:
    """Lines waiting to be written, bounded: when full the oldest are dropped and counted."""

    limit: int
    lines: deque[tuple[date, bytes]] = field(default_factory=deque)
    dropped: int = 0

    def add(self, day: date, line: bytes) -> None:
        if len(self.lines) >= self.limit:
            self.lines.popleft()
            self.dropped += 1
        self.lines.append((day, line))


class SegmentStream:
    """All segments of one kind (detections, effort, events, health) for one boot, rotated per UTC day and size."""

    def __init__(self, folder: Path, boot_id: str, extension: str, header: bytes, max_pending: int) -> None:
        self.folder = folder
        self.boot_id = boot_id
        self.extension = extension
        self.header = header
        self.pending = PendingLines(max_pending)
        self.written = 0
        self._segment: AppendSegment | None = None
        self._day: date | None = None
        self._next_part: dict[date, int] = {}

    def add(self, day: date, line: bytes) -> None:
        self.pending.add(day, line)

    def write_pending(self) -> None:
        """Append every pending line, one fsync per day run; raises ``OSError`` with the unwritten lines kept."""
        lines = self.pending.lines
        while lines:
            day = lines[0][0]
            run = 0
            while run < len(lines) and lines[run][0] == day:
                run += 1
            segment = self._segment_for(day)
            segment.append(b"".join(lines[i][1] for i in range(run)))
            for _ in range(run):
                lines.popleft()
            self.written += run

    @property
    def open_segment(self) -> AppendSegment | None:
        """The segment being appended to (None between segments)."""
        return self._segment

    def _segment_for(self, day: date) -> AppendSegment:
        if self._segment is not None and (self._day != day or self._segment.size >= MAX_SEGMENT_BYTES):
            self.seal()
        if self._segment is None:
            durable.make_dirs(self.folder)
            part = self._next_part.get(day, 0)
            self._next_part[day] = part + 1
            self._segment = AppendSegment(self.folder / segment_name(day, self.boot_id, part, self.extension),
                                          self.header)
            self._day = day
        return self._segment

    def seal(self) -> None:
        if self._segment is not None:
            segment, self._segment = self._segment, None
            segment.seal()


def csv_line(values: Iterable[Any]) -> bytes:
    """One CSV record (RFC 4180 quoting) as UTF-8 bytes ending in ``\\n``."""
    cells = []
    for value in values:
        # One record per line, always: a line break inside a value would defeat torn-line detection.
        text = "" if value is None else str(value).replace("\r", " ").replace("\n", " ")
        if "," in text or '"' in text:
            text = '"' + text.replace('"', '""') + '"'
        cells.append(text)
    return (",".join(cells) + "\n").encode("utf-8")


def json_line(record: dict[str, Any]) -> bytes:
    """One JSON object per line; values that JSON cannot hold are written as strings rather than failing."""
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode("utf-8")


@dataclass(frozen=True)
class CsvSegment:
    """A CSV segment as read: its header, its complete and well-formed rows, and what was wrong with the rest."""

    path: Path
    header: tuple[str, ...]
    rows: list[list[str]]
    notes: list[str]
    """What a power cut leaves and the writer expects: an empty file, a torn last line (nothing confirmed lost)."""
    problems: list[str]
    """Damage the writer never produces: malformed lines, bytes that are not UTF-8."""


@dataclass(frozen=True)
class JsonSegment:
    path: Path
    records: list[dict[str, Any]]
    notes: list[str]
    problems: list[str]


def _complete_lines(path: Path, notes: list[str], problems: list[str]) -> list[str]:
    """The file's complete lines, decoded; a torn tail or an empty file is noted, never raised."""
    data = path.read_bytes()
    if not data:
        notes.append(f"{path}: empty file (created but never written; nothing lost)")
        return []
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        notes.append(f"{path}: torn last line ({len(data) - cut} bytes after the last newline) skipped; "
                     "it was never confirmed written")
    try:
        text = data[:cut].decode("utf-8")
    except UnicodeDecodeError:
        text = data[:cut].decode("utf-8", errors="replace")
        problems.append(f"{path}: bytes that are not UTF-8 replaced (card corruption?)")
    return text.split("\n")[:-1]


def read_csv_segment(path: Path) -> CsvSegment:
    """Read a CSV segment; a torn tail, an empty file or malformed rows are reported, never raised."""
    notes: list[str] = []
    problems: list[str] = []
    lines = _complete_lines(path, notes, problems)
    if not lines:
        return CsvSegment(path, (), [], notes, problems)
    parsed: list[list[str] | None] = []
    for number, line in enumerate(lines, start=1):  # line by line: one damaged byte costs one line, not the file
        try:
            parsed.append(next(csv.reader([line]), []))
        except csv.Error as e:
            problems.append(f"{path}:{number}: damaged line ({e}); skipped")
            parsed.append(None)
    if parsed[0] is None:
        return CsvSegment(path, (), [], notes, problems)
    header = tuple(parsed[0])
    rows = []
    for number, row in enumerate(parsed[1:], start=2):
        if row is None:
            continue
        if len(row) == len(header):
            rows.append(row)
        else:
            problems.append(f"{path}:{number}: {len(row)} fields where the header has {len(header)}; skipped")
    return CsvSegment(path, header, rows, notes, problems)


def read_jsonl_segment(path: Path) -> JsonSegment:
    """Read a JSON-lines segment; torn or unparsable lines are reported and skipped."""
    notes: list[str] = []
    problems: list[str] = []
    records = []
    for number, line in enumerate(_complete_lines(path, notes, problems), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{number}: not JSON ({e.msg}); skipped")
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            problems.append(f"{path}:{number}: not a JSON object; skipped")
    return JsonSegment(path, records, notes, problems)
