"""``logs export``: tidy CSV / Parquet with provenance, Raven selection tables, Audacity label tracks."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from desk.collect.database import copy_table
from edge.card.cardformat import safe_name
from edge.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

FORMATS = ("csv", "parquet", "raven", "audacity")
DEFAULT_SAMPLE_RATE = 48_000
"""Model rate, used for boots whose manifest is missing."""
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Begin Path", "Begin File", "File Offset (s)", "Begin Date Time (UTC)", "Species",
                 "Score", "Cosine", "Clock Sync")
RAVEN_SUFFIX = ".BioLingual.selection.table.txt"
AUDACITY_SUFFIX = ".audacity-labels.txt"

ISO = "strftime({}, '%Y-%m-%dT%H:%M:%S.%gZ')"
TIDY_QUERY = f"""(
    SELECT d.unit_id, d.deployment_id, d.label, {ISO.format('d.utc')} AS utc, {ISO.format('d.end_utc')} AS end_utc,
           d.score, d.cosine, d.windows, d.clock_sync, d.boot_id, d.stream, d.start_sample, d.end_sample,
           b.sample_rate, b.settings_hash, json_extract_string(b.boot_info, '$.config_hash') AS config_hash,
           b.schema_version, d.card, d.source_file
    FROM detections d LEFT JOIN boots b USING (unit_id, boot_id)
    ORDER BY d.unit_id, d.utc, d.label)"""
"""One row per detection, R/pandas friendly: snake_case names, ISO-8601 UTC, settings traced per row."""


@dataclass(frozen=True)
class StreamExtent:
    """One continuous audio stream of a unit, placed in the unit's file sequence."""

    unit_id: str
    boot_id: str
    stream: int
    first_sample: int
    sample_rate: int
    offset_s: float
    """Seconds of all earlier streams of this unit (Raven's cumulative time)."""

    @property
    def name(self) -> str:
        return f"{self.boot_id}_s{self.stream}"


def export(con: duckdb.DuckDBPyConnection, file_format: str, out: Path) -> list[Path]:
    """Write detections in ``file_format``; csv/parquet go to the file ``out``, raven/audacity to folder ``out``."""
    if file_format not in FORMATS:
        raise ConfigError(f"unknown export format {file_format!r}", f"use one of {', '.join(FORMATS)}")
    if file_format in ("csv", "parquet"):
        out.parent.mkdir(parents=True, exist_ok=True)
        copy_table(con, TIDY_QUERY, out, file_format)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    streams = stream_extents(con)
    return write_raven(con, streams, out) if file_format == "raven" else write_audacity(con, streams, out)


def stream_extents(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, int], StreamExtent]:
    """Streams per unit in time order, each offset by the total length of the unit's earlier streams."""
    rows = con.execute(f"""
        SELECT s.unit_id, s.boot_id, s.stream, min(s.first_sample), max(s.last_sample), min(s.t),
               coalesce(any_value(b.sample_rate), {DEFAULT_SAMPLE_RATE})
        FROM (SELECT unit_id, boot_id, stream, first_sample, last_sample, minute_utc AS t FROM effort UNION ALL
              SELECT unit_id, boot_id, stream, start_sample, end_sample, utc FROM detections) s
        LEFT JOIN boots b USING (unit_id, boot_id)
        GROUP BY ALL ORDER BY s.unit_id, min(s.t), s.boot_id, s.stream""").fetchall()
    extents = {}
    elapsed: dict[str, float] = defaultdict(float)
    for unit, boot, stream, first, last, _, rate in rows:
        extents[(unit, boot, stream)] = StreamExtent(unit, boot, stream, first, rate, elapsed[unit])
        elapsed[unit] += (last - first) / rate
    return extents


def _detections(con: duckdb.DuckDBPyConnection) -> list[tuple]:  # type: ignore[type-arg]
    return con.execute("""
        SELECT unit_id, boot_id, stream, start_sample, end_sample, label, score, cosine, clock_sync,
               strftime(utc, '%Y/%m/%d %H:%M:%S.%g')
        FROM detections ORDER BY unit_id, utc, start_sample, label""").fetchall()


def _clips(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str, int], tuple[str, int]]:
    """Clip of each detection that has one: (unit, boot, label, event start sample) -> (path, clip start sample)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'clips'").fetchall()[0][0]:
        return {}  # a database collected before clips were
    rows = con.execute("""SELECT unit_id, boot_id, label, event_start_sample, path, clip_start_sample FROM clips
                          WHERE clip_start_sample IS NOT NULL""").fetchall()
    return {(unit, boot, label, start): (path, clip_start) for unit, boot, label, start, path, clip_start in rows}


def write_raven(con: duckdb.DuckDBPyConnection, streams: dict[tuple[str, str, int], StreamExtent],
                folder: Path) -> list[Path]:
    """One Raven Pro selection table per unit; its streams form one file sequence (cumulative Begin Time).

    A detection with a clip on the card names that WAV (Begin Path / Begin File, File Offset into it);
    the others name their stream, which has no audio file of its own.
    """
    clips = _clips(con)
    by_unit: dict[str, list[list[object]]] = defaultdict(list)
    for unit, boot, stream_no, start, end, label, score, cosine, sync, when in _detections(con):
        stream = streams[(unit, boot, stream_no)]
        offset = (start - stream.first_sample) / stream.sample_rate
        duration = (end - start) / stream.sample_rate
        clip = clips.get((unit, boot, label, start))
        audio, name, file_offset = ("", stream.name, offset) if clip is None else \
            (clip[0], Path(clip[0]).name, (start - clip[1]) / stream.sample_rate)
        rows = by_unit[unit]
        rows.append([len(rows) + 1, "Spectrogram 1", 1, f"{stream.offset_s + offset:.3f}",
                     f"{stream.offset_s + offset + duration:.3f}", 0, stream.sample_rate // 2, audio, name,
                     f"{file_offset:.3f}", when, label, f"{score:.6g}", f"{cosine:.6g}", sync])
    paths = []
    for unit, rows in sorted(by_unit.items()):
        path = folder / f"{safe_name(unit)}{RAVEN_SUFFIX}"
        _write_tsv(path, RAVEN_COLUMNS, rows)
        paths.append(path)
    return paths


def write_audacity(con: duckdb.DuckDBPyConnection, streams: dict[tuple[str, str, int], StreamExtent],
                   folder: Path) -> list[Path]:
    """One Audacity label track per stream; times in seconds from the stream's first sample."""
    by_stream: dict[StreamExtent, list[list[object]]] = defaultdict(list)
    for unit, boot, stream_no, start, end, label, score, _, _, _ in _detections(con):
        stream = streams[(unit, boot, stream_no)]
        begin = (start - stream.first_sample) / stream.sample_rate
        by_stream[stream].append([f"{begin:.6f}", f"{begin + (end - start) / stream.sample_rate:.6f}",
                                  f"{label} ({score:.3g})"])
    paths = []
    for stream, rows in sorted(by_stream.items(), key=lambda item: (item[0].unit_id, item[0].offset_s)):
        path = folder / f"{safe_name(stream.unit_id)}_{stream.name}{AUDACITY_SUFFIX}"
        _write_tsv(path, None, rows)
        paths.append(path)
    return paths


def _write_tsv(path: Path, header: tuple[str, ...] | None, rows: list[list[object]]) -> None:
    temp = path.with_name(f".tmp-{path.name}")
    with open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    temp.replace(path)
