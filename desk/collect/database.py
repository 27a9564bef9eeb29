"""The collection database (DuckDB): schema, idempotent ingest of card contents, deduplicated on record keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.collect.layout import check_readable, present_columns, upgrade
from edge.errors import EdgeError

if TYPE_CHECKING:  # the card readers (and soundfile under them) are not needed to open a database
    import duckdb

    from desk.collect.cards import CardContents, Finding, Table


class CollectError(EdgeError):
    """The collection database cannot be opened or written."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS detections (
    unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, stream INTEGER, clock_sync VARCHAR,
    utc TIMESTAMP, end_utc TIMESTAMP, label VARCHAR, score DOUBLE, cosine DOUBLE,
    start_sample BIGINT, end_sample BIGINT, peak_start_sample BIGINT, windows INTEGER,
    card VARCHAR, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS effort (
    unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, stream INTEGER, clock_sync VARCHAR,
    minute_utc TIMESTAMP, first_sample BIGINT, last_sample BIGINT, analysed_s DOUBLE,
    card VARCHAR, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS events (
    unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, seq BIGINT, stream INTEGER, clock_sync VARCHAR,
    sample BIGINT, utc TIMESTAMP, kind VARCHAR, fields VARCHAR, card VARCHAR, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS health (
    unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, seq BIGINT, stream INTEGER, clock_sync VARCHAR,
    sample BIGINT, utc TIMESTAMP, kind VARCHAR, fields VARCHAR, card VARCHAR, source_file VARCHAR,
    temperature_c DOUBLE, disk_free_bytes BIGINT);
CREATE TABLE IF NOT EXISTS boots (
    unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, schema_version INTEGER, sample_rate INTEGER,
    settings_hash VARCHAR, wall_utc_at_boot TIMESTAMP, boot_info VARCHAR, card VARCHAR);
CREATE TABLE IF NOT EXISTS card_boots (card VARCHAR, unit_id VARCHAR, boot_id VARCHAR);
CREATE TABLE IF NOT EXISTS clips (
    unit_id VARCHAR, boot_id VARCHAR, label VARCHAR, event_start_sample BIGINT, clip_start_sample BIGINT,
    sample_rate INTEGER, length_s DOUBLE, path VARCHAR, card VARCHAR, source_file VARCHAR);
CREATE TABLE IF NOT EXISTS findings (
    collected_utc TIMESTAMP, severity VARCHAR, "check" VARCHAR, message VARCHAR, card VARCHAR);
"""
UNIT_EFFORT_VIEW = """CREATE OR REPLACE VIEW unit_effort AS
    SELECT unit_id, minute_utc, least(sum(analysed_s), 60.0) AS analysed_s, count(DISTINCT boot_id) AS boots
    FROM effort GROUP BY unit_id, minute_utc;
"""
"""``unit_effort``: seconds analysed per unit and UTC minute, whatever the boots: overlapping boots (a restart
within the minute, two recorders sharing an id) never add up to more than the minute."""
SCHEMA += UNIT_EFFORT_VIEW

UTC = "CAST({} AS TIMESTAMPTZ) AT TIME ZONE 'UTC'"
"""ISO-8601 text with any offset -> naive UTC TIMESTAMP (unparseable -> NULL via TRY_CAST)."""

DETECTION_SELECT = f"""
    unit_id, deployment_id, boot_id, TRY_CAST(stream AS INTEGER), clock_sync,
    TRY_{UTC.format('utc')}, TRY_{UTC.format('end_utc')}, label, TRY_CAST(score AS DOUBLE),
    TRY_CAST(cosine AS DOUBLE), TRY_CAST(start_sample AS BIGINT), TRY_CAST(end_sample AS BIGINT),
    TRY_CAST(peak_start_sample AS BIGINT), TRY_CAST(windows AS INTEGER), card, source_file"""
EFFORT_SELECT = f"""
    unit_id, deployment_id, boot_id, TRY_CAST(stream AS INTEGER), clock_sync, TRY_{UTC.format('minute_utc')},
    TRY_CAST(first_sample AS BIGINT), TRY_CAST(last_sample AS BIGINT), TRY_CAST(analysed_s AS DOUBLE),
    card, source_file"""
RECORD_SELECT = f"""
    unit_id, deployment_id, boot_id, TRY_CAST(seq AS BIGINT), TRY_CAST(stream AS INTEGER), clock_sync,
    TRY_CAST(sample AS BIGINT), TRY_{UTC.format('utc')}, kind, fields, card, source_file"""
HEALTH_SELECT = RECORD_SELECT + ", TRY_CAST(temperature_c AS DOUBLE), TRY_CAST(disk_free_bytes AS BIGINT)"
CLIP_SELECT = """
    unit_id, boot_id, label, TRY_CAST(event_start_sample AS BIGINT), TRY_CAST(clip_start_sample AS BIGINT),
    TRY_CAST(sample_rate AS INTEGER), TRY_CAST(length_s AS DOUBLE), path, card, source_file"""

KEYS = {
    "detections": ("unit_id", "boot_id", "stream", "start_sample", "label"),
    "effort": ("unit_id", "boot_id", "stream", "minute_utc", "first_sample"),
    "events": ("unit_id", "boot_id", "seq"),
    "health": ("unit_id", "boot_id", "seq"),
    "boots": ("unit_id", "boot_id"),
    "card_boots": ("card", "unit_id", "boot_id"),
    "clips": ("unit_id", "boot_id", "label", "event_start_sample"),
}
"""What makes a record unique: re-reading a card, or a copy of it, adds nothing."""


@dataclass(frozen=True)
class IngestCounts:
    """Rows read from a card and rows that were new, per table."""

    read: dict[str, int]
    added: dict[str, int]
    unusable: dict[str, int]
    """Rows whose key columns could not be parsed (reported, not stored)."""


NO_EXTENSIONS: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False}
DUCKDB_MAGIC = b"DUCK"
"""DuckDB's file signature, at byte 8 of the file."""


def _is_duckdb(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return True  # unreadable: let DuckDB say why


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the collection database, with timestamps handled in UTC."""
    return open_database(path, read_only)[0]


def open_database(path: Path, read_only: bool = False, also: str = "", also_optional: frozenset[str] = frozenset()) \
        -> tuple[duckdb.DuckDBPyConnection, dict[str, set[str]]]:
    """:func:`connect`, checking (read-only: refusing what this code cannot read; else bringing up to date) the
    collection's schema and ``also`` (another schema kept in the same database, whose tables may be absent;
    ``also_optional``: its columns read with a fallback) from one read of the catalog. Returns the connection and
    the database's tables with their columns."""
    try:
        import duckdb
    except ImportError as e:
        raise CollectError("duckdb is not installed", "pip install 'biolingual-edge[desk]'") from e
    if read_only and not path.is_file():
        raise CollectError(f"no collection database at {path}", "run `biolingual-edge logs collect` first")
    if not path.parent.is_dir():
        why = "is not a folder" if path.parent.exists() else "does not exist"
        raise CollectError(f"cannot create {path}: {path.parent} {why}",
                           f"create it first (mkdir -p {path.parent}) or pick another --into")
    if path.is_file() and path.stat().st_size and not _is_duckdb(path):
        raise CollectError(f"{path} is not a DuckDB database", "pass the .duckdb file written by `logs collect`")
    try:  # never fetch or load an extension: a foreign file must not make DuckDB go to the network
        con = duckdb.connect(str(path), read_only=read_only, config=NO_EXTENSIONS)
    except duckdb.Error as e:
        raise CollectError(f"cannot open {path}: {e}", "is another process using it? is it a DuckDB file?") from e
    run(con, "SET TimeZone = 'UTC'")
    try:
        if read_only:
            present = present_columns(con)
            check_readable(con, path, SCHEMA, present=present)
            if also:
                check_readable(con, path, also, also_optional, only_present=True, present=present)
        else:
            for schema in (SCHEMA, also) if also else (SCHEMA,):
                upgrade(con, path, schema)
            present = present_columns(con)
    except BaseException:
        con.close()
        raise
    return con, present


def run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Execute and fetch: DuckDB wants every result consumed before the next statement."""
    return con.execute(sql, params).fetchall()


def _object_columns(names: tuple[str, ...], rows: list[list[Any]]) -> dict[str, np.ndarray]:
    columns = list(zip(*rows)) if rows else [() for _ in names]
    return {name: np.array(values, dtype=object) for name, values in zip(names, columns)}


def _insert(con: duckdb.DuckDBPyConnection, table: str, staging: dict[str, np.ndarray], select: str) -> tuple[int, int]:
    """Insert typed rows not already present (by ``KEYS[table]``); returns (added, unusable)."""
    keys = KEYS[table]
    con.register("staging", staging)
    try:
        run(con, f"CREATE OR REPLACE TEMP TABLE typed AS SELECT * FROM {table} LIMIT 0")
        run(con, f"INSERT INTO typed SELECT {select} FROM staging")
        unusable = run(con, f"SELECT count(*) FROM typed WHERE {' OR '.join(f'{k} IS NULL' for k in keys)}")
        match = " AND ".join(f"t.{k} = d.{k}" for k in keys)
        before = _count(con, table)
        run(con, f"""
            INSERT INTO {table}
            SELECT * FROM (SELECT DISTINCT ON ({', '.join(keys)}) * FROM typed
                           WHERE {' AND '.join(f'{k} IS NOT NULL' for k in keys)}) t
            WHERE NOT EXISTS (SELECT 1 FROM {table} d WHERE {match})""")
        return _count(con, table) - before, int(unusable[0][0])
    finally:
        con.unregister("staging")
        run(con, "DROP TABLE IF EXISTS typed")


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(run(con, f"SELECT count(*) FROM {table}")[0][0])


def _table_staging(table: Table, card: str) -> dict[str, np.ndarray]:
    staging = _object_columns(table.columns, table.rows)
    staging["card"] = np.full(len(table.rows), card, dtype=object)
    staging["source_file"] = np.array(table.files, dtype=object)
    return staging


def _record_staging(records: list[tuple[dict[str, Any], str]], card: str,
                    extra: tuple[str, ...]) -> dict[str, np.ndarray]:
    from edge.card.cardformat import ENVELOPE_FIELDS

    rows = []
    for record, source in records:
        fields = {k: v for k, v in record.items() if k not in ENVELOPE_FIELDS}
        rows.append([_text(record.get(name)) for name in ENVELOPE_FIELDS]
                    + [json.dumps(fields, sort_keys=True), card, source]
                    + [_text(record.get(name)) for name in extra])
    return _object_columns((*ENVELOPE_FIELDS, "fields", "card", "source_file", *extra), rows)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _boot_staging(boots: list[dict[str, Any]], card: str) -> dict[str, np.ndarray]:
    rows = [[_text(b.get("unit_id")), _text(b.get("deployment_id")), _text(b.get("boot_id")),
             _text(b.get("schema_version")), _text(b.get("sample_rate")), _text(b.get("settings_hash")),
             _text(b.get("wall_utc_at_boot")), json.dumps(b.get("boot_info", {}), sort_keys=True, default=str), card]
            for b in boots]
    return _object_columns(("unit_id", "deployment_id", "boot_id", "schema_version", "sample_rate",
                            "settings_hash", "wall_utc_at_boot", "boot_info", "card"), rows)


BOOT_SELECT = f"""unit_id, deployment_id, boot_id, TRY_CAST(schema_version AS INTEGER),
    TRY_CAST(sample_rate AS INTEGER), settings_hash, TRY_{UTC.format('wall_utc_at_boot')}, boot_info, card"""


def ingest(con: duckdb.DuckDBPyConnection, contents: CardContents) -> IngestCounts:
    """Add one card's records; rows already in the database (same key) are skipped. One transaction per card."""
    card = contents.card
    stagings = {
        "detections": (_table_staging(contents.detections, card), DETECTION_SELECT),
        "effort": (_table_staging(contents.effort, card), EFFORT_SELECT),
        "events": (_record_staging(contents.events, card, ()), RECORD_SELECT),
        "health": (_record_staging(contents.health, card, ("temperature_c", "disk_free_bytes")), HEALTH_SELECT),
        "boots": (_boot_staging(contents.boots, card), BOOT_SELECT),
        "clips": (_table_staging(contents.clips, card), CLIP_SELECT),
    }
    read, added, unusable = {}, {}, {}
    run(con, "BEGIN TRANSACTION")
    try:
        for table, (staging, select) in stagings.items():
            read[table] = len(next(iter(staging.values()))) if staging else 0
            added[table], unusable[table] = _insert(con, table, staging, select) if read[table] else (0, 0)
        pairs = _unit_boots(contents)
        if pairs:
            added["card_boots"], _ = _insert(con, "card_boots", _object_columns(
                ("card", "unit_id", "boot_id"), [[card, unit, boot] for unit, boot in sorted(pairs)]),
                "card, unit_id, boot_id")
        run(con, "COMMIT")
    except Exception as e:
        run(con, "ROLLBACK")
        import duckdb

        if isinstance(e, duckdb.Error):
            raise CollectError(f"database error while adding {card}: {e}",
                               "nothing from this card was stored; check free space where the database is") from e
        raise
    return IngestCounts(read, added, unusable)


def _unit_boots(contents: CardContents) -> set[tuple[str, str]]:
    """Every (unit, boot) this card holds, whether or not its rows were new to the database."""
    pairs = {(str(b.get("unit_id")), str(b.get("boot_id"))) for b in contents.boots}
    for table in (contents.detections, contents.effort):
        unit, boot = table.columns.index("unit_id"), table.columns.index("boot_id")
        pairs.update((str(row[unit]), str(row[boot])) for row in table.rows)
    for records in (contents.events, contents.health):
        pairs.update((str(r.get("unit_id")), str(r.get("boot_id"))) for r, _ in records)
    return pairs


def record_findings(con: duckdb.DuckDBPyConnection, findings: list[Finding], cards: list[str]) -> None:
    """Replace the findings of the database-wide checks and of the cards just read; others' stay as they were.

    Re-collecting the same cards leaves the table as it was (apart from the collection time).
    """
    run(con, "BEGIN TRANSACTION")
    try:
        con.executemany("DELETE FROM findings WHERE card = ?", [[card] for card in ["", *cards]])
        unique = list(dict.fromkeys((f.severity, f.check, f.message, f.card) for f in findings))
        if unique:
            con.executemany("INSERT INTO findings VALUES (now() AT TIME ZONE 'UTC', ?, ?, ?, ?)",
                            [list(f) for f in unique])
        run(con, "COMMIT")
    except Exception:
        run(con, "ROLLBACK")
        raise


def copy_table(con: duckdb.DuckDBPyConnection, query: str, path: Path, file_format: str = "parquet") -> None:
    """Write a table or ``(SELECT ...)`` to ``path`` as Parquet or CSV, through a temp file and a rename."""
    temp = path.with_name(f".tmp-{path.name}")
    options = "FORMAT parquet" if file_format == "parquet" else "FORMAT csv, HEADER true"
    run(con, f"COPY {query} TO '{_sql_path(temp)}' ({options})")
    temp.replace(path)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def listened_days(db: Path) -> list[tuple[str, Any]]:
    """(unit, UTC midnight) of every day a unit analysed audio (``unit_effort``): the days a detection history
    counts as listened. Empty for a database without effort (windows of ``analyze --embeddings`` of old)."""
    con = connect(db, read_only=True)
    try:
        return run(con, """SELECT DISTINCT unit_id, date_trunc('day', minute_utc) FROM unit_effort
                           WHERE analysed_s > 0 ORDER BY ALL""")
    finally:
        con.close()
