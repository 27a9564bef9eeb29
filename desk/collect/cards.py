"""Reading one card folder as the collector sees it: every segment parsed, every oddity reported, nothing fatal."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from edge.card.cardformat import (
    BOOTS_DIR,
    CLIPS_DIR,
    DETECTION_COLUMNS,
    DETECTIONS_DIR,
    EFFORT_COLUMNS,
    EFFORT_DIR,
    EVENTS_DIR,
    HEALTH_DIR,
    OPEN_SUFFIX,
    SCHEMA_VERSION,
    TEMP_PREFIX,
    safe_name,
    unique_name,
)
from edge.card.guano import read_guano
from edge.card.segments import read_csv_segment, read_jsonl_segment

SEGMENT_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})_(?P<boot>[^_/]+)_(\d{3,})\.(csv|jsonl)(\.part)?$")
DETECTION_KEY = ("unit_id", "boot_id", "stream", "start_sample", "label")
EFFORT_KEY = ("unit_id", "boot_id", "stream", "minute_utc", "first_sample")
NOT_UTF8 = "\ufffd"
"""What the segment reader puts in place of bytes that are not UTF-8: such a row's ids cannot be trusted."""
CLIP_SUFFIXES = (".wav", ".flac")
"""Clip files whose GUANO metadata says where they lie in their stream."""
CLIP_COLUMNS = ("unit_id", "boot_id", "label", "event_start_sample", "clip_start_sample", "sample_rate",
                "length_s", "path")


@dataclass(frozen=True)
class Finding:
    """Something a person should know about the collected data."""

    severity: str
    """``error`` (data are ambiguous or wrong), ``warning`` (data are incomplete), ``info`` (nothing lost)."""
    check: str
    message: str
    card: str = ""


@dataclass
class Table:
    """Rows of one record kind as strings, in ``columns`` order, plus the file each row came from."""

    columns: tuple[str, ...]
    rows: list[list[str | None]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class CardContents:
    card: str
    boots: list[dict[str, Any]] = field(default_factory=list)
    detections: Table = field(default_factory=lambda: Table(DETECTION_COLUMNS))
    effort: Table = field(default_factory=lambda: Table(EFFORT_COLUMNS))
    events: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    health: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    clips: Table = field(default_factory=lambda: Table(CLIP_COLUMNS))
    findings: list[Finding] = field(default_factory=list)
    files_read: int = 0
    skipped_boots: set[str] = field(default_factory=set)
    """Boots written with a newer schema: none of their data (rows, clips, window embeddings) is taken."""

    def note(self, severity: str, check: str, message: str) -> None:
        self.findings.append(Finding(severity, check, message, self.card))


def read_card(folder: Path) -> CardContents:
    """Everything on one card; missing folders, torn lines and old schemas become findings, never exceptions."""
    contents = CardContents(str(folder.resolve()))
    if not folder.is_dir():
        contents.note("error", "card", f"{folder} is not a folder; skipped")
        return contents
    versions = _read_manifests(folder, contents)
    _read_csv_kind(folder / DETECTIONS_DIR, contents.detections, contents, versions, DETECTION_KEY)
    _read_csv_kind(folder / EFFORT_DIR, contents.effort, contents, versions, EFFORT_KEY)
    _read_json_kind(folder / EVENTS_DIR, contents.events, contents, versions)
    _read_json_kind(folder / HEALTH_DIR, contents.health, contents, versions)
    _read_clips(folder / CLIPS_DIR, contents)
    _note_shared_clip_folders(contents)
    if not contents.files_read and not contents.boots:
        contents.note("warning", "card", f"{folder} holds no biolingual-edge card log (no {BOOTS_DIR}/ or segments)")
    return contents


def _read_manifests(folder: Path, contents: CardContents) -> dict[str, int]:
    """Boot manifests by boot id -> schema version; unreadable ones reported."""
    versions: dict[str, int] = {}
    for path in sorted((folder / BOOTS_DIR).glob("*.json")):
        if path.name.startswith(TEMP_PREFIX):
            continue
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            boot_id, version = str(manifest["boot_id"]), int(manifest["schema_version"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            contents.note("warning", "manifest", f"{path}: unreadable boot manifest ({e}); its settings are unknown")
            continue
        versions[boot_id] = version
        if version > SCHEMA_VERSION:
            contents.note("error", "schema", f"boot {boot_id} was written with schema version {version}, newer than "
                          f"this collector's {SCHEMA_VERSION}; skipped (upgrade biolingual-edge and collect again)")
            contents.skipped_boots.add(boot_id)
            continue
        if version < SCHEMA_VERSION:
            contents.note("warning", "schema", f"boot {boot_id} was written with older schema version {version} "
                          f"(current {SCHEMA_VERSION}); read by column name, missing columns left empty")
        contents.boots.append(manifest)
    return versions


def _segments(folder: Path, extension: str, contents: CardContents,
              versions: dict[str, int]) -> list[Path]:
    paths = []
    for path in sorted(folder.glob(f"*.{extension}")) + sorted(folder.glob(f"*.{extension}{OPEN_SUFFIX}")):
        if not path.name.isascii():  # the writer names segments in ASCII: anything else is a damaged entry
            contents.note("error", "card", f"{ascii(str(path))}: file name damaged (not ASCII; card corruption); "
                          "skipped: copy the card again or check it with fsck")
            continue
        match = SEGMENT_NAME.match(path.name)
        if match is None:
            contents.note("info", "files", f"{path}: not a card-log segment name; ignored")
            continue
        boot = match["boot"]
        if versions.get(boot, SCHEMA_VERSION) > SCHEMA_VERSION:
            continue
        if boot not in versions:
            contents.note("warning", "manifest", f"{path}: no manifest for boot {boot}; rows kept, settings unknown")
            versions[boot] = SCHEMA_VERSION
        paths.append(path)
    contents.files_read += len(paths)
    return paths


def _read_csv_kind(folder: Path, table: Table, contents: CardContents, versions: dict[str, int],
                   key: tuple[str, ...]) -> None:
    for path in _segments(folder, "csv", contents, versions):
        segment = read_csv_segment(path)
        _note_lines(contents, segment.notes, segment.problems)
        if not segment.header:
            continue
        missing = [c for c in table.columns if c not in segment.header]
        if any(c in missing for c in key):
            contents.note("warning", "schema", f"{path}: header lacks key column(s) "
                          f"{', '.join(c for c in key if c in missing)}; file skipped")
            continue
        if missing:
            contents.note("warning", "schema", f"{path}: columns {', '.join(missing)} missing; left empty")
        rows = _drop_not_utf8(path, segment.rows, contents)
        table.rows.extend(_reorder(segment.header, table.columns, rows))
        table.files.extend([str(path)] * len(rows))


def _reorder(header: tuple[str, ...], columns: tuple[str, ...],
             rows: list[list[str]]) -> list[list[str | None]]:
    """Rows in ``columns`` order; a column the file lacks (older schema) becomes ``None``."""
    if header == columns:
        return cast(list[list[str | None]], rows)
    positions = [header.index(c) if c in header else -1 for c in columns]
    return [[row[p] if p >= 0 else None for p in positions] for row in rows]


def _note_lines(contents: CardContents, notes: list[str], problems: list[str]) -> None:
    for note in notes:
        contents.note("info", "lines", note)
    for problem in problems:
        contents.note("warning", "lines", problem)


def _read_json_kind(folder: Path, records: list[tuple[dict[str, Any], str]], contents: CardContents,
                    versions: dict[str, int]) -> None:
    for path in _segments(folder, "jsonl", contents, versions):
        segment = read_jsonl_segment(path)
        _note_lines(contents, segment.notes, segment.problems)
        kept = _drop_not_utf8(path, segment.records, contents)
        records.extend((record, str(path)) for record in kept)


def _drop_not_utf8(path: Path, rows: list[Any], contents: CardContents) -> list[Any]:
    """Rows holding bytes that were not UTF-8 are corrupt: dropped and reported, never filed under a phantom id."""
    kept = [row for row in rows if NOT_UTF8 not in (str(row) if isinstance(row, dict) else "".join(row))]
    if len(kept) < len(rows):
        contents.note("error", "card", f"{path}: {len(rows) - len(kept)} row(s) with bytes that are not UTF-8 "
                      "(card corruption) skipped; copy the card again or check it with fsck")
    return kept


def _read_clips(folder: Path, contents: CardContents) -> None:
    """Each clip with GUANO metadata, so exports can point at a real audio file."""
    for path in sorted(p for p in folder.glob("*/*") if p.suffix in CLIP_SUFFIXES and
                       not p.name.startswith(TEMP_PREFIX)):
        if not str(path.relative_to(folder)).isascii():
            contents.note("error", "card", f"{ascii(str(path))}: clip name damaged (not ASCII); skipped")
            continue
        try:
            guano = read_guano(path)
            row: list[str | None] = [guano["Serial"], guano["BIOL|Boot"], guano["Species Auto ID"],
                                     guano["BIOL|Event Start Sample"], guano["BIOL|Clip Start Sample"],
                                     guano["Samplerate"], guano["Length"], str(path.resolve())]
        except (OSError, UnicodeDecodeError, KeyError) as e:
            contents.note("info", "clips", f"{path}: no readable GUANO metadata ({e}); not linked to a detection")
            continue
        if row[1] in contents.skipped_boots:
            continue
        contents.clips.rows.append(row)
        contents.clips.files.append(str(path))


def _note_shared_clip_folders(contents: CardContents) -> None:
    """Clips of older units lie in ``clips/<sanitised label>/``, a folder labels such as ``.`` and ``..`` shared.
    They are still linked by the label in their GUANO; where two labels detected at the same moment shared the
    folder, say which one the clip belongs to (the other label has no clip of its own there)."""
    boot, start, label = (contents.detections.columns.index(c) for c in ("boot_id", "start_sample", "label"))
    labels_at: dict[tuple[str | None, str | None], set[str]] = {}
    for row in contents.detections.rows:
        labels_at.setdefault((row[boot], row[start]), set()).add(str(row[label]))
    for _, clip_boot, clip_label, clip_start, *_, path in contents.clips.rows:
        folder = Path(str(path)).parent.name
        if clip_label is None or folder == unique_name(clip_label):
            continue
        sharing = sorted(other for other in labels_at.get((clip_boot, clip_start), ())
                         if other != clip_label and safe_name(other) == folder)
        if sharing:
            contents.note("warning", "clips", f"{path}: an older unit's clip folder {folder}/ is shared by labels "
                          f"{', '.join(map(repr, [clip_label, *sharing]))} detected at this moment; the clip is "
                          f"{clip_label!r}'s (its GUANO label) and linked to it only")
