"""Rows a unit could not write to its card, read back as the card's rows.

When the card is full or read-only at stop the daemon spills what it still holds to
``<storage.fallback_dir>/<boot>.unwritten.jsonl`` on the unit's own disk (:func:`edge.card.reserve.spill`): one
JSON object per row, ``{"kind", "day", "line"}`` for a CSV or JSON-lines row of the card, ``{"kind", "day",
"base64"}`` for a window-embedding record after the ``{"kind", "segment_header"}`` that decodes it. Every row
carries its own unit, deployment and boot, so ``logs collect`` files it exactly as if it had been on the card;
the keys the collector already deduplicates on make a row that is on the card and in the file (a read-only card
keeps the batch whose fsync failed) count once. A damaged line costs that line only.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from desk.collect.cards import CardContents, Table
from edge.card.cardformat import DETECTION_COLUMNS, EFFORT_COLUMNS
from edge.card.embedformat import EmbeddingSegment, SegmentHeader, decode_embedding_segment
from edge.card.reserve import FALLBACK_SUFFIX

CARD_PREFIX = "unwritten:"
"""The ``card`` the rows of a fallback file are filed under: ``unwritten:<its name>`` (a copy of a card's rows,
never a card of its own; the name holds the boot, so every copy of one file is the same)."""
CSV_KINDS = {"detections": DETECTION_COLUMNS, "effort": EFFORT_COLUMNS}
JSON_KINDS = ("events", "health")
BINARY_KIND = "embeddings"
PLACE_BY = ("unit_id", "boot_id")
"""What a row must name to be filed: the unit and the boot it belongs to."""


class DamagedLine(ValueError):
    """One line of a fallback file that cannot be read back; it is reported and skipped."""


@dataclass
class Unwritten:
    """One fallback file as read: its rows as a card's, its window embeddings, and the lines it had to skip."""

    path: Path
    contents: CardContents
    windows: list[EmbeddingSegment] = field(default_factory=list)
    """One segment per segment header, its records in file order."""
    unplaced: dict[str, int] = field(default_factory=dict)
    """Rows per kind that name no unit or boot (or embeddings with no header): kept out, reported as one error."""

    @property
    def rows(self) -> int:
        c = self.contents
        return len(c.detections.rows) + len(c.effort.rows) + len(c.events) + len(c.health) + sum(
            len(s.records) for s in self.windows)

    def boots(self) -> set[tuple[str, str]]:
        """Every (unit, boot) its rows name."""
        found = {(h.unit_id, h.boot_id) for s in self.windows if (h := s.header) is not None}
        for table in (self.contents.detections, self.contents.effort):
            unit, boot = (table.columns.index(c) for c in PLACE_BY)
            found.update((str(r[unit]), str(r[boot])) for r in table.rows)
        for records in (self.contents.events, self.contents.health):
            found.update((str(r["unit_id"]), str(r["boot_id"])) for r, _ in records)
        return found


def is_unwritten(path: Path) -> bool:
    return path.name.endswith(FALLBACK_SUFFIX)


def find_unwritten(folder: Path, recursive: bool = False) -> list[Path]:
    """Fallback files in ``folder``: at its top or one folder down (a unit's ``unwritten/`` copied beside the card's
    log), or anywhere below it with ``recursive``."""
    if not folder.is_dir():
        return [folder] if is_unwritten(folder) else []
    patterns = (f"**/*{FALLBACK_SUFFIX}",) if recursive else (f"*{FALLBACK_SUFFIX}", f"*/*{FALLBACK_SUFFIX}")
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


def read_unwritten(path: Path) -> Unwritten:
    """Every row of the fallback file at ``path``; a damaged line becomes one finding naming the file and line."""
    label = f"{CARD_PREFIX}{path.name}"
    found = Unwritten(path, CardContents(label))
    if path.is_dir():
        found.contents.note("error", "unwritten", f"{path}: no fallback file (*{FALLBACK_SUFFIX}) in this folder")
        return found
    try:
        data = path.read_bytes()
    except OSError as e:
        found.contents.note("error", "unwritten", f"{path}: unreadable ({e.strerror}); its rows were not collected")
        return found
    header: bytes | None = None
    records: dict[bytes, list[tuple[int, bytes]]] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            entry = _entry(raw)
            kind = entry["kind"]
            if "segment_header" in entry:
                header = _header(entry)
                records.setdefault(header, [])
            elif kind == BINARY_KIND:
                if header is None:
                    found.unplaced[kind] = found.unplaced.get(kind, 0) + 1
                else:
                    records[header].append((number, _base64(entry, "base64")))
            elif kind in CSV_KINDS:
                _add_csv(found, kind, _csv(entry, CSV_KINDS[kind]), f"{path}:{number}")
            elif kind in JSON_KINDS:
                _add_json(found, kind, _record(entry), f"{path}:{number}")
            else:
                raise DamagedLine(f"unknown kind {kind!r}")
        except DamagedLine as e:
            found.contents.note("warning", "lines", f"{path}:{number}: damaged line ({e}); skipped, the rest kept")
    for encoded, lines in records.items():
        found.windows.append(_segment(path, encoded, lines, found.contents))
    return found


def _entry(raw: bytes) -> dict[str, Any]:
    try:
        entry = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedLine("not a JSON line of ASCII") from e
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise DamagedLine("no record kind")
    return entry


def _text(entry: dict[str, Any]) -> str:
    line = entry.get("line")
    if not isinstance(line, str):
        raise DamagedLine("no row text")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as e:  # the writer kept bytes that were not UTF-8 as escapes: the ids are not trustworthy
        raise DamagedLine("bytes that are not UTF-8") from e
    return line.rstrip("\r\n")


def _csv(entry: dict[str, Any], columns: tuple[str, ...]) -> list[str | None]:
    try:
        row = next(csv.reader([_text(entry)]), [])
    except csv.Error as e:
        raise DamagedLine(str(e)) from e
    if len(row) != len(columns):
        raise DamagedLine(f"{len(row)} fields where a {entry['kind']} row has {len(columns)}")
    return list(row)


def _record(entry: dict[str, Any]) -> dict[str, Any]:
    try:
        record = json.loads(_text(entry))
    except ValueError as e:
        raise DamagedLine("its row is not JSON") from e
    if not isinstance(record, dict):
        raise DamagedLine("its row is not a JSON object")
    return record


def _base64(entry: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(str(entry[key]), validate=True)
    except (KeyError, binascii.Error) as e:
        raise DamagedLine(f"no valid base64 {key}") from e


def _header(entry: dict[str, Any]) -> bytes:
    encoded = _base64(entry, "segment_header")
    if decode_embedding_segment(encoded, Path("header")).header is None:
        raise DamagedLine("the window-embedding segment header does not decode")
    return encoded


def _add_csv(found: Unwritten, kind: str, row: list[str | None], source: str) -> None:
    table: Table = getattr(found.contents, kind)
    if not all(row[table.columns.index(c)] for c in PLACE_BY):
        found.unplaced[kind] = found.unplaced.get(kind, 0) + 1
        return
    table.rows.append(row)
    table.files.append(source)


def _add_json(found: Unwritten, kind: str, record: dict[str, Any], source: str) -> None:
    if not all(record.get(c) for c in PLACE_BY):
        found.unplaced[kind] = found.unplaced.get(kind, 0) + 1
        return
    records: list[tuple[dict[str, Any], str]] = getattr(found.contents, kind)
    records.append((record, source))


def _segment(path: Path, header: bytes, lines: Iterable[tuple[int, bytes]], contents: CardContents) -> EmbeddingSegment:
    """The records under one header, each checked on its own (length, CRC) by the card's segment reader."""
    good: list[np.ndarray] = []
    decoded: SegmentHeader | None = None
    for number, record in lines:
        segment = decode_embedding_segment(header + record, path)
        decoded = segment.header
        if segment.problems or segment.notes or len(segment.records) != 1:
            contents.note("warning", "lines", f"{path}:{number}: damaged line (a window embedding that is not one "
                          "whole record with a good CRC); skipped, the rest kept")
            continue
        good.append(segment.records)
    decoded = decoded or decode_embedding_segment(header, path).header
    records = np.concatenate(good) if good else np.zeros(0)
    return EmbeddingSegment(path, decoded, records, [], [])
