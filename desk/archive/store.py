"""The season archive: window embeddings from cards and ``analyze --embeddings`` folders, ready to re-score and search.

Embeddings live in Parquet shards (``<db>.archive/unit=<unit>/day=<UTC day>/*.parquet``: ``window_id`` and a
``FixedSizeList<float16, D>`` column, L2-normalised, uncompressed), the archive of record that any Parquet tool
reads; beside each shard a raw float16 ``.f16.npy`` copy is what scans memory-map (a matrix product, not a
value-by-value list decode). Window metadata lives in the DuckDB table ``windows`` next to the detections.
Ingest is one segment at a time (bounded memory) and idempotent: a window already archived (same unit, boot,
stream and start sample) is never added twice, and a segment already taken whole is not even re-read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.archive.half_matmul import cosines
from desk.archive.prefilter import write_codes
from desk.collect.cards import Finding
from desk.collect.database import CollectError, connect, run
from edge.card.cardformat import CLOCK_SYNC_STATES, MICROSECONDS_PER_SECOND, OPEN_SUFFIX, TEMP_PREFIX, safe_name
from edge.card.embedformat import EMBEDDINGS_DIR, EXTENSION, UNKNOWN_UTC_US, dequantise, read_embedding_segment

if TYPE_CHECKING:
    import duckdb

ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    window_id BIGINT, unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, stream INTEGER,
    start_sample BIGINT, end_sample BIGINT, sample_rate INTEGER, start_utc TIMESTAMP, end_utc TIMESTAMP,
    clock_sync VARCHAR, source_path VARCHAR, source_offset BIGINT, model_sha256 VARCHAR,
    shard VARCHAR, shard_row INTEGER, card VARCHAR);
CREATE TABLE IF NOT EXISTS embedding_segments (
    unit_id VARCHAR, boot_id VARCHAR, segment VARCHAR, records BIGINT, card VARCHAR);
"""
"""``windows``: one row per archived window (the interface other desk tools read); ``shard``/``shard_row`` say
where its embedding is (path relative to the archive folder, row in that file). ``embedding_segments``: which
card segments were taken whole."""
EMBEDDING_COLUMN = "embedding"
ARCHIVE_SUFFIX = ".archive"
UNKNOWN_DAY = "unknown"
SCAN_COPY_SUFFIX = ".f16.npy"


def archive_root(db_path: Path) -> Path:
    """The shard folder that belongs to a collection database: ``season.duckdb`` -> ``season.archive/``."""
    return db_path.with_name(db_path.stem + ARCHIVE_SUFFIX)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise CollectError("pyarrow is not installed", "pip install 'biolingual-edge[desk]'") from e
    return pyarrow


@dataclass(frozen=True)
class ArchiveCounts:
    read: int
    added: int
    findings: list[Finding]


def ingest_embeddings(con: duckdb.DuckDBPyConnection, card: Path, root: Path) -> ArchiveCounts:
    """Archive every embedding segment under ``card/embeddings/`` (sealed and ``.part``)."""
    run(con, ARCHIVE_SCHEMA)
    folder = card / EMBEDDINGS_DIR
    paths = sorted(p for p in folder.glob(f"*.{EXTENSION}*")
                   if p.name.endswith((f".{EXTENSION}", f".{EXTENSION}{OPEN_SUFFIX}"))
                   and not p.name.startswith(TEMP_PREFIX))
    read = added = 0
    findings: list[Finding] = []
    for path in paths:
        segment = read_embedding_segment(path)
        findings += [Finding("info", "embeddings", n, str(card)) for n in segment.notes]
        findings += [Finding("warning", "embeddings", p, str(card)) for p in segment.problems]
        header = segment.header
        if header is None or not len(segment.records):
            continue
        read += len(segment.records)
        name = path.name.removesuffix(OPEN_SUFFIX)
        done = run(con, "SELECT max(records) FROM embedding_segments WHERE unit_id = ? AND boot_id = ? AND "
                        "segment = ?", [header.unit_id, header.boot_id, name])[0][0]
        if done is not None and done >= len(segment.records):
            continue
        added += _archive_segment(con, segment.records, header, root, name, str(card))
        run(con, "INSERT INTO embedding_segments VALUES (?, ?, ?, ?, ?)",
            [header.unit_id, header.boot_id, name, len(segment.records), str(card)])
    return ArchiveCounts(read, added, findings)


def _new_rows(con: duckdb.DuckDBPyConnection, records: np.ndarray, unit: str, boot: str) -> np.ndarray:
    """Indices of records whose (unit, boot, stream, start_sample) is not archived yet (first of duplicates)."""
    starts = records["start_sample"]
    streams = records["stream"].astype(np.int64)
    keys = streams << 40 | starts  # start samples stay below 2**40 (254 days at 48 kHz per stream)
    _, first = np.unique(keys, return_index=True)
    existing = run(con, "SELECT stream, start_sample FROM windows WHERE unit_id = ? AND boot_id = ? AND "
                        "start_sample BETWEEN ? AND ?", [unit, boot, int(starts.min()), int(starts.max())])
    if existing:
        known = np.array([(int(s) << 40) | int(x) for s, x in existing], np.int64)
        first = first[~np.isin(keys[first], known)]
    return np.sort(first)


def _archive_segment(con: duckdb.DuckDBPyConnection, records: np.ndarray, header: Any, root: Path, name: str,
                     card: str) -> int:
    keep = _new_rows(con, records, header.unit_id, header.boot_id)
    if not len(keep):
        return 0
    records = records[keep]
    # fp16: the model's unit vectors exactly as the unit stored them (scans renormalise); int8: dequantised
    vectors = records["vector"] if header.dtype == "fp16" else normalised(dequantise(records)).astype(np.float16)
    utc = records["start_utc_us"]
    known = utc != UNKNOWN_UTC_US
    days = np.where(known, (utc // (86_400 * MICROSECONDS_PER_SECOND)), -1)
    next_id = int(run(con, "SELECT coalesce(max(window_id), 0) + 1 FROM windows")[0][0])
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        ids = np.arange(next_id, next_id + len(rows), dtype=np.int64)
        next_id += len(rows)
        label = UNKNOWN_DAY if day < 0 else str(np.datetime64(int(day), "D"))
        shard = Path(f"unit={safe_name(header.unit_id)}") / f"day={label}" / f"{Path(name).stem}_{ids[0]}.parquet"
        write_shard(root / shard, ids, vectors[rows])
        _insert_windows(con, records[rows], ids, header, str(shard), card)
    return len(records)


def scan_copy(shard: Path) -> Path:
    """The shard's embeddings as a raw ``(N, D)`` float16 ``.npy`` beside it, memory-mapped by scans."""
    return shard.with_suffix(SCAN_COPY_SUFFIX)


def write_shard(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    """``window_id`` + ``FixedSizeList<float16, D>`` embeddings, uncompressed, through a temp file and a rename;
    plus the scan copy (Parquet decodes a list column value by value, ~100× slower than mapping a matrix)."""
    pa = _pyarrow()
    path.parent.mkdir(parents=True, exist_ok=True)
    copy = scan_copy(path)
    temp_copy = copy.with_name(TEMP_PREFIX + copy.name)
    with open(temp_copy, "wb") as handle:
        np.save(handle, np.ascontiguousarray(vectors, np.float16))
    temp_copy.replace(copy)
    write_codes(path, vectors)
    flat = pa.array(np.ascontiguousarray(vectors, np.float16).reshape(-1), type=pa.float16())
    table = pa.table({"window_id": pa.array(ids, pa.int64()),
                      EMBEDDING_COLUMN: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    temp = path.with_name(TEMP_PREFIX + path.name)
    pa.parquet.write_table(table, temp, compression="none", use_dictionary=False, write_statistics=False)
    temp.replace(path)


def _insert_windows(con: duckdb.DuckDBPyConnection, records: np.ndarray, ids: np.ndarray, header: Any,
                    shard: str, card: str) -> None:
    pa = _pyarrow()
    count = len(records)
    utc = records["start_utc_us"]
    known = utc != UNKNOWN_UTC_US
    end_us = utc + (records["end_sample"] - records["start_sample"]) * MICROSECONDS_PER_SECOND // header.sample_rate
    stamp = pa.timestamp("us")
    on_file = header.source_path is not None
    table = pa.table({
        "window_id": ids, "unit_id": [header.unit_id] * count, "deployment_id": [header.deployment_id] * count,
        "boot_id": [header.boot_id] * count, "stream": records["stream"].astype(np.int32),
        "start_sample": records["start_sample"], "end_sample": records["end_sample"],
        "sample_rate": np.full(count, header.sample_rate, np.int32),
        "start_utc": pa.array(utc, stamp, mask=~known), "end_utc": pa.array(end_us, stamp, mask=~known),
        "clock_sync": [CLOCK_SYNC_STATES[c] for c in records["clock_sync"]],
        "source_path": pa.array([header.source_path] * count, pa.string()),
        "source_offset": pa.array(records["start_sample"], pa.int64(), mask=np.full(count, not on_file)),
        "model_sha256": [header.model_sha256] * count, "shard": [shard] * count,
        "shard_row": np.arange(count, dtype=np.int32), "card": [card] * count})
    con.register("new_windows", table)
    try:
        run(con, "INSERT INTO windows SELECT * FROM new_windows")
    finally:
        con.unregister("new_windows")


def read_shard(path: Path) -> np.ndarray:
    """A shard's embeddings as ``(N, D)`` float16: the memory-mapped scan copy, else decoded from the Parquet."""
    copy = scan_copy(path)
    if copy.is_file():
        try:
            return np.load(copy, mmap_mode="r")
        except (OSError, ValueError):
            pass  # damaged scan copy: the Parquet shard is the record
    pa = _pyarrow()
    try:
        column = pa.parquet.read_table(path, columns=[EMBEDDING_COLUMN], memory_map=True)[EMBEDDING_COLUMN]
    except (OSError, pa.ArrowException) as e:
        raise CollectError(f"archive shard {path} is missing or unreadable: {e}",
                           "collect the cards again into a fresh database") from e
    array = column.combine_chunks()
    dim = array.type.list_size
    return array.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


@dataclass(frozen=True)
class Block:
    """Windows of one shard that pass a filter: their ids and their stored float16 embeddings ``(n, D)``."""

    window_ids: np.ndarray
    rows: np.ndarray

    def cosines(self, queries: np.ndarray) -> np.ndarray:
        """Cosines ``(n, K)`` float32 against unit ``queries`` ``(D, K)`` float32 (row norms divided out)."""
        return cosines(self.rows, queries)


def shards(con: duckdb.DuckDBPyConnection, where: str = "TRUE", params: list[Any] | None = None) -> \
        list[tuple[str, np.ndarray | slice, np.ndarray]]:
    """(shard, its rows that match ``where``, their window ids) in window order.

    Rows are a ``slice`` when they are one contiguous run (a whole shard, or a time range of one) — the usual
    case, answered from per-shard aggregates without moving a row id through Python.
    """
    found = run(con, f"""SELECT shard, count(*), min(window_id), max(window_id), min(shard_row), max(shard_row)
                         FROM windows WHERE {where} GROUP BY shard ORDER BY min(window_id)""", params or [])
    result: list[tuple[str, np.ndarray | slice, np.ndarray]] = []
    for shard, count, first_id, last_id, first_row, last_row in found:
        if last_id - first_id + 1 == count and last_row - first_row + 1 == count:
            result.append((shard, slice(first_row, last_row + 1), np.arange(first_id, last_id + 1, dtype=np.int64)))
            continue
        rows, ids = run(con, f"""SELECT list(shard_row ORDER BY shard_row), list(window_id ORDER BY shard_row)
                                 FROM windows WHERE shard = ? AND ({where})""", [shard, *(params or [])])[0]
        result.append((shard, np.asarray(rows, np.int64), np.asarray(ids, np.int64)))
    return result


def scan(con: duckdb.DuckDBPyConnection, root: Path, where: str = "TRUE", params: list[Any] | None = None) -> \
        Iterator[Block]:
    """Every archived window matching ``where`` (SQL over ``windows``), shard by shard, in window order."""
    for shard, rows, ids in shards(con, where, params):
        yield Block(ids, read_shard(root / shard)[rows])


def read_embeddings(db_path: Path, window_ids: list[int] | np.ndarray) -> np.ndarray:
    """``(N, D)`` float32 L2-normalised embeddings of ``window_ids``, in that order (unknown ids raise)."""
    wanted = np.asarray(window_ids, np.int64)
    con = connect(db_path, read_only=True)
    try:
        pa = _pyarrow()
        con.register("wanted", pa.table({"pos": np.arange(len(wanted)), "window_id": wanted}))
        rows = run(con, """SELECT w.shard, list(q.pos), list(w.shard_row) FROM wanted q
                           JOIN windows w USING (window_id) GROUP BY w.shard""")
    finally:
        con.close()
    found = sum(len(pos) for _, pos, _ in rows)
    if found != len(wanted):
        raise CollectError(f"{len(wanted) - found} of {len(wanted)} window ids are not in {db_path}",
                           "take window ids from this database's windows table")
    out: np.ndarray | None = None
    for shard, positions, shard_rows in rows:
        matrix = read_shard(archive_root(db_path) / shard)
        if out is None:
            out = np.empty((len(wanted), matrix.shape[1]), np.float32)
        out[np.asarray(positions)] = normalised(matrix[np.asarray(shard_rows)])
    return out if out is not None else np.zeros((0, 0), np.float32)


def normalised(rows: np.ndarray) -> np.ndarray:
    """float16/float32 rows -> float32 rows of unit length (undoes the fp16 rounding of the norm)."""
    rows = rows.astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    rows *= 1 / np.where(norms > 0, norms, 1)
    return rows


def require_windows(con: duckdb.DuckDBPyConnection) -> int:
    """Archived windows in the database; a typed error when there are none (or the database predates them)."""
    has_table = run(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'windows'")[0][0]
    total = int(run(con, "SELECT count(*) FROM windows")[0][0]) if has_table else 0
    if total == 0:
        raise CollectError("the archive holds no window embeddings",
                           "collect cards written with storage.embeddings on, or run `analyze --embeddings DIR` "
                           "and `logs collect DIR`")
    return total
