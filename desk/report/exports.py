"""``logs export``: tidy CSV / Parquet with provenance, Raven selection tables, Audacity label tracks.

Raven tables and Audacity tracks go through the one table writer (:mod:`edge.batch.tables`), row chunk by row
chunk, so they share ``analyze``'s schema, and file names stay unique however units are named.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desk.collect.database import copy_table
from edge.batch.tables import FORMATS, BirdnetCsv, DetectionHistory, RecordingTables, Selection, parse_formats

if TYPE_CHECKING:
    import duckdb

DEFAULT_SAMPLE_RATE = 48_000
"""Model rate, used for boots whose manifest is missing."""
TIDY_NAME = "detections"
"""File name (plus .csv / .parquet) of the tidy table when ``--out`` is a folder."""
CHUNK_ROWS = 10_000
"""Detections read from the database and written per table at a time."""

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
    band_hz: tuple[float, float] = (0.0, DEFAULT_SAMPLE_RATE / 2)
    """The band the unit's model heard (its boot records it), else 0 to Nyquist."""

    @property
    def name(self) -> str:
        return f"{self.boot_id}_s{self.stream}"


def export(con: duckdb.DuckDBPyConnection, file_format: str, out: Path) -> list[Path]:
    """Write detections in the ``--format`` types (comma-separated) into folder ``out``; a single csv or parquet
    goes to the file ``out`` when its name ends so (``--out season.csv``)."""
    formats = parse_formats(file_format, FORMATS, "logs export")
    if len(formats) == 1 and formats[0] in ("csv", "parquet") and out.suffix == f".{formats[0]}":
        out.parent.mkdir(parents=True, exist_ok=True)
        copy_table(con, TIDY_QUERY, out, formats[0])
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for tidy in (f for f in formats if f in ("csv", "parquet")):
        copy_table(con, TIDY_QUERY, out / f"{TIDY_NAME}.{tidy}", tidy)
        paths.append(out / f"{TIDY_NAME}.{tidy}")
    streams = stream_extents(con) if {"raven", "audacity", "birdnet"} & set(formats) else {}
    if "raven" in formats:
        paths += write_raven(con, streams, out)
    if "audacity" in formats:
        paths += write_audacity(con, streams, out)
    if "birdnet" in formats:
        paths.append(write_birdnet(con, streams, out))
    if "occupancy" in formats:
        paths += write_detection_history(con, out)
    return paths


def stream_extents(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, int], StreamExtent]:
    """Streams per unit in time order, each offset by the total length of the unit's earlier streams."""
    rows = con.execute(f"""
        SELECT s.unit_id, s.boot_id, s.stream, min(s.first_sample), max(s.last_sample), min(s.t),
               coalesce(any_value(b.sample_rate), {DEFAULT_SAMPLE_RATE}),
               any_value(json_extract_string(b.boot_info, '$.band_hz'))
        FROM (SELECT unit_id, boot_id, stream, first_sample, last_sample, minute_utc AS t FROM effort UNION ALL
              SELECT unit_id, boot_id, stream, start_sample, end_sample, utc FROM detections) s
        LEFT JOIN boots b USING (unit_id, boot_id)
        GROUP BY ALL ORDER BY s.unit_id, min(s.t), s.boot_id, s.stream""").fetchall()
    extents = {}
    elapsed: dict[str, float] = defaultdict(float)
    for unit, boot, stream, first, last, _, rate, band in rows:
        extents[(unit, boot, stream)] = StreamExtent(unit, boot, stream, first, rate, elapsed[unit],
                                                     tuple(json.loads(band)) if band else (0.0, rate / 2))
        elapsed[unit] += (last - first) / rate
    return extents


def _detections(con: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    """Every detection in unit and time order, :data:`CHUNK_ROWS` at a time from the database."""
    con.execute("""
        SELECT unit_id, boot_id, stream, start_sample, end_sample, label, score, clock_sync, utc
        FROM detections ORDER BY unit_id, utc, start_sample, label""")
    while chunk := con.fetchmany(CHUNK_ROWS):
        yield from chunk


def _runs(rows: Iterator[tuple[Any, ...]], key: Callable[[tuple[Any, ...]], Hashable]) \
        -> Iterator[tuple[Any, list[tuple[Any, ...]]]]:
    """Consecutive rows with the same ``key``, at most :data:`CHUNK_ROWS` per run."""
    run: list[tuple[Any, ...]] = []
    current: Hashable = None
    for row in rows:
        if run and (key(row) != current or len(run) >= CHUNK_ROWS):
            yield current, run
            run = []
        current = key(row)
        run.append(row)
    if run:
        yield current, run


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
    tables = RecordingTables(folder, ("raven",))
    for unit, rows in _runs(_detections(con), lambda row: row[0]):
        selections = []
        for _, boot, stream_no, start, end, label, score, sync, when in rows:
            stream = streams[(unit, boot, stream_no)]
            offset = (start - stream.first_sample) / stream.sample_rate
            clip = clips.get((unit, boot, label, start))
            audio, name, file_offset = ("", stream.name, offset) if clip is None else \
                (str(Path(clip[0]).resolve()), Path(clip[0]).name, (start - clip[1]) / stream.sample_rate)
            selections.append(Selection(stream.offset_s + offset, stream.offset_s + offset + (end - start) /
                                        stream.sample_rate, label, score, stream.band_hz, begin_path=audio,
                                        begin_file=name, file_offset_s=file_offset, utc=when,
                                        clock_sync=sync or ""))
        tables.write(unit, unit, selections)
    return tables.paths


def write_audacity(con: duckdb.DuckDBPyConnection, streams: dict[tuple[str, str, int], StreamExtent],
                   folder: Path) -> list[Path]:
    """One Audacity label track per stream; times in seconds from the stream's first sample."""
    tables = RecordingTables(folder, ("audacity",))
    for (unit, boot, stream_no), rows in _runs(_detections(con), lambda row: row[:3]):
        stream = streams[(unit, boot, stream_no)]
        tables.write(f"{unit}/{boot}/{stream_no}", f"{unit}_{stream.name}", [
            Selection((start - stream.first_sample) / stream.sample_rate,
                      (end - stream.first_sample) / stream.sample_rate, label, score, stream.band_hz)
            for _, _, _, start, end, label, score, _, _ in rows])
    return tables.paths



def write_birdnet(con: duckdb.DuckDBPyConnection, streams: dict[tuple[str, str, int], StreamExtent],
                  folder: Path) -> Path:
    """BirdNET-Analyzer's combined table: ``File`` is the detection's clip on the card where it has one (times
    into it), else its stream ``unit/boot_sN`` (times from the stream's first sample)."""
    clips = _clips(con)
    table = BirdnetCsv(folder)
    try:
        for unit, boot, stream_no, start, end, label, score, _, when in _detections(con):
            stream = streams[(unit, boot, stream_no)]
            clip = clips.get((unit, boot, label, start))
            first, file = ((stream.first_sample, f"{unit}/{stream.name}") if clip is None
                           else (clip[1], str(Path(clip[0]).resolve())))
            table.write(file, [Selection((start - first) / stream.sample_rate, (end - first) / stream.sample_rate,
                                         label, score, stream.band_hz, utc=when)])
    finally:
        table.close()
    return table.path


def write_detection_history(con: duckdb.DuckDBPyConnection, folder: Path) -> list[Path]:
    """Per label a unit × UTC day detection history: a day with analysed audio (effort) is 0 or 1, any other
    day ``NA`` (not listened: unknown)."""
    history = DetectionHistory()
    for unit, day in con.execute("""SELECT DISTINCT unit_id, date_trunc('day', minute_utc) FROM unit_effort
                                    WHERE analysed_s > 0""").fetchall():
        history.listen(unit, day, day)  # the query of desk.collect.database.listened_days, on this connection
    for unit, when, label in con.execute("""SELECT DISTINCT unit_id, date_trunc('day', utc), label FROM detections
                                            WHERE utc IS NOT NULL AND label IS NOT NULL""").fetchall():
        history.detect(unit, when, label)
    return history.write(folder)
