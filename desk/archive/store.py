"""The season archive: :class:`DuckShardStore`, the :class:`~desk.archive.windows.WindowStore` of the desk.

Embeddings live once, in Parquet shards (``<db>.archive/unit=<unit>/day=<UTC day>/*.parquet``, the layout of
:mod:`desk.archive.shardfile`) that scans memory-map in place; the approximate index (:mod:`desk.archive.ivf`)
sits in ``<db>.archive/index/``. Window metadata lives in the DuckDB table ``windows`` next to the detections.
Inserts are idempotent: a window already archived (same unit, boot, stream and start sample) is never added
twice, and a segment already taken whole is skipped. Nothing outside this module, its shard format and its index
knows this layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.archive.arrow_numpy import column_numpy
from desk.archive.bounded import bounded_top
from desk.archive.half_matmul import cosines
from desk.archive.ivf import INDEX_DIR, MIN_WINDOWS, IvfIndex, training_rows
from desk.archive.shardfile import Shard, migrate_shard, pyarrow_module, write_shard
from desk.archive.shardrows import shards
from desk.archive.windows import (
    DESCRIPTION,
    EVERY_WINDOW,
    Scored,
    StoredRows,
    WindowBatch,
    WindowFilter,
    WindowShapeError,
    id_array,
    normalised,
    require_windows,
    top_of,
)
from desk.collect.database import CollectError, open_database, run
from edge.card.cardformat import MICROSECONDS_PER_SECOND, safe_name
from edge.card.embedformat import UNKNOWN_UTC_US
from edge.model.space import short_space

if TYPE_CHECKING:
    import pyarrow as pa

ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    window_id BIGINT, unit_id VARCHAR, deployment_id VARCHAR, boot_id VARCHAR, stream INTEGER,
    start_sample BIGINT, end_sample BIGINT, sample_rate INTEGER, start_utc TIMESTAMP, end_utc TIMESTAMP,
    clock_sync VARCHAR, source_path VARCHAR, source_offset BIGINT, model_sha256 VARCHAR,
    shard VARCHAR, shard_row INTEGER, card VARCHAR, embedding_space VARCHAR);
CREATE TABLE IF NOT EXISTS embedding_segments (
    unit_id VARCHAR, boot_id VARCHAR, segment VARCHAR, records BIGINT, card VARCHAR);
"""
"""``windows``: one row per archived window; ``shard``/``shard_row`` say where its embedding is (path relative
to the archive folder, row in that file), ``embedding_space`` the space the unit recorded (null or empty for
windows from before spaces were named: their ``model_sha256`` is the key). ``embedding_segments``: which card
segments were taken whole."""
ARCHIVE_SUFFIX = ".archive"
UNKNOWN_DAY = "unknown"
DERIVED = {"recording": "coalesce(source_path, unit_id || '/' || boot_id || '/stream' || stream)",
           "start": "coalesce(source_offset, start_sample)",
           "stop": "coalesce(source_offset, start_sample) + end_sample - start_sample",
           "samples": "end_sample - start_sample"}
"""SQL of the derived columns of :data:`~desk.archive.windows.DESCRIPTION`."""
SPACE_KEY = "coalesce(nullif(embedding_space, ''), model_sha256)"
"""A window's space key: its recorded space, else (archived before spaces were named) its model file's sha256."""
SCAN_CELLS = 4_000_000
"""Cosines (rows × queries, float32) a scan yields at once: a page of 20 000 rows for up to 200 queries."""
EXACT_BELOW = 200_000
"""Windows a filter may leave for approximate search to still scan them exactly (a fraction of a second)."""
CANDIDATES_PER_HIT = 20
MIN_CANDIDATES = 400
"""Index candidates re-ranked exactly on the archive's float16 vectors: 20 per hit asked, at least 400 ..."""
WINDOWS_PER_CANDIDATE = 5_000
"""... and one per this many windows of the archive (2 000 at 10 M): the probed lists grow with it, and so does
the share of near-ties that 4-bit codes misorder. Chosen on a 10 M archive (``benchmarks/rerank_curve.py``,
BENCHMARKS.md *Indexed search at 10 M*): recall@10 by example 0.90 / 0.95 / 0.98 / 0.99 with 500 / 1 000 /
2 000 / 4 000 candidates, season queries 0.99-1.00 from 500."""
WANTED = "(SELECT unnest($ids::BIGINT[]) AS window_id, generate_subscripts($ids::BIGINT[], 1) AS pos)"
"""The window ids of parameter ``$ids`` with their 1-based place in it."""


def archive_root(db_path: Path) -> Path:
    """The shard folder that belongs to a collection database: ``season.duckdb`` -> ``season.archive/``."""
    return db_path.with_name(db_path.stem + ARCHIVE_SUFFIX)


def _column(name: str, space_key: str = SPACE_KEY) -> str:
    if name not in DESCRIPTION:
        raise ValueError(f"{name!r} is not a window column ({', '.join(DESCRIPTION)})")
    if name == "space":
        return f"{space_key} AS space"
    return f"{DERIVED[name]} AS {name}" if name in DERIVED else name


def filter_sql(where: WindowFilter, space_key: str = SPACE_KEY) -> tuple[str, list[Any]]:
    """``where`` as a SQL condition over ``windows``, and its parameters (``space_key``: the SQL of a window's
    space)."""
    parts: list[str] = []
    params: list[Any] = []
    for column, values in (("unit_id", where.units), ("boot_id", where.boots), ("stream", where.streams),
                           (space_key, where.spaces)):
        if values is not None:
            parts.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "FALSE")
            params += list(values)
    for bound, operator in ((where.since, ">="), (where.until, "<")):
        if bound is not None:
            parts.append(f"start_utc {operator} ?")
            aware = bound if bound.tzinfo else bound.replace(tzinfo=timezone.utc)
            params.append(aware.astimezone(timezone.utc).replace(tzinfo=None))
    return " AND ".join(parts) or "TRUE", params


class DuckShardStore:
    """Window metadata in the collection database's DuckDB ``windows`` table, embeddings in Parquet shards
    with memory-mapped float16 scan copies beside them (see the module docstring)."""

    def __init__(self, db_path: Path, writable: bool = False) -> None:
        self.db_path = db_path
        self.root = archive_root(db_path)
        # windows of before spaces were named are read by their model's sha256
        self.con, present = open_database(db_path, not writable, ARCHIVE_SCHEMA, frozenset({"windows.embedding_space"}))
        self._has_windows = "windows" in present
        recorded = "embedding_space" in present.get("windows", ())
        self._space_key = SPACE_KEY if recorded else "model_sha256"  # a database from before spaces were named
        self._shards: dict[str, Shard] = {}
        self._spans: tuple[np.ndarray, np.ndarray, list[str]] | None = None
        self._counts: dict[WindowFilter, int] = {}
        self._spaces: dict[WindowFilter, dict[str, int]] = {}
        self._index: IvfIndex | None = None
        if writable:
            self.migrate()

    def shard(self, name: str) -> Shard:
        """The shard ``name`` (relative to the archive folder), mapped once per store."""
        if name not in self._shards:
            self._shards[name] = Shard(self.root / name)
        return self._shards[name]

    def migrate(self) -> int:
        """Rewrite shards of the earlier layout (Parquet + ``.f16.npy`` copy) as single mappable Parquet files;
        returns how many were rewritten."""
        names = [row[0] for row in run(self.con, "SELECT DISTINCT shard FROM windows ORDER BY shard")]
        return sum(migrate_shard(self.root / name) for name in names)

    def __enter__(self) -> DuckShardStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()
        self.con.close()

    def _archived(self) -> bool:
        """False for a collection database from before the archive (no ``windows`` table)."""
        return self._has_windows

    def count(self, where: WindowFilter = EVERY_WINDOW) -> int:
        if not self._archived():
            return 0
        if where not in self._counts:
            sql, params = self._filter(where)
            self._counts[where] = int(run(self.con, f"SELECT count(*) FROM windows WHERE {sql}", params)[0][0])
        return self._counts[where]

    def tally(self, columns: tuple[str, ...], where: WindowFilter = EVERY_WINDOW) -> dict[tuple[Any, ...], int]:
        if not self._archived():
            return {}
        sql, params = self._filter(where)
        chosen = ", ".join(_column(c, self._space_key) for c in columns)
        found = run(self.con, f"SELECT {chosen}, count(*) FROM windows WHERE {sql} GROUP BY ALL ORDER BY ALL", params)
        return {tuple(row[:-1]): int(row[-1]) for row in found}

    def spaces(self, where: WindowFilter = EVERY_WINDOW) -> dict[str, int]:
        if not self._archived():
            return {}
        if where not in self._spaces:
            sql, params = self._filter(where)
            # grouped on the columns themselves, the key made per group: 2/3 of the time of making it per row
            recorded = "embedding_space" if self._space_key == SPACE_KEY else "NULL"
            found: dict[str, int] = {}
            for space, sha, n in run(self.con, f"SELECT {recorded}, model_sha256, count(*) FROM windows WHERE {sql} "
                                               "GROUP BY ALL", params):
                found[str(space or sha)] = found.get(str(space or sha), 0) + int(n)
            self._spaces[where] = found
        return dict(self._spaces[where])

    def _filter(self, where: WindowFilter) -> tuple[str, list[Any]]:
        return filter_sql(where, self._space_key)

    def match(self, where: WindowFilter = EVERY_WINDOW, limit: int | None = None) -> np.ndarray:
        if not self._archived():
            return np.zeros(0, np.int64)
        sql, params = self._filter(where)
        tail = "" if limit is None else f" LIMIT {int(limit)}"
        found = self.con.execute(f"SELECT window_id FROM windows WHERE {sql} ORDER BY window_id{tail}", params)
        return np.asarray(found.fetchnumpy()["window_id"], np.int64)

    def windows(self, ids: Iterable[int] | np.ndarray, columns: tuple[str, ...] = DESCRIPTION) -> pa.Table:
        wanted = self._ids(ids)
        chosen = ", ".join(_column(c, self._space_key) for c in columns)
        if len(wanted) and wanted[-1] - wanted[0] + 1 == len(wanted) and np.all(np.diff(wanted) > 0):
            # one run of ids (a scan chunk): a range the table's zone maps answer, ~8x faster than a join; rows
            # come in insertion order, which is id order unless the table was rewritten (then sorted here: an
            # ORDER BY would sort every time, half the cost of the query)
            table = self.con.sql(f"SELECT window_id AS _id, {chosen} FROM windows WHERE window_id BETWEEN $first "
                                 "AND $last", params={"first": int(wanted[0]), "last": int(wanted[-1])}
                                 ).to_arrow_table()
            found = column_numpy(table["_id"])  # not pyarrow's to_numpy: it imports pandas
            if np.any(np.diff(found) <= 0):
                table = table.take(np.argsort(found, kind="stable"))
            table = table.drop_columns(["_id"])
        else:
            table = self.con.sql(f"SELECT {chosen} FROM {WANTED} JOIN windows USING (window_id) ORDER BY pos",
                                 params={"ids": wanted.tolist()}).to_arrow_table()
        self._all_found(len(wanted), table.num_rows)
        return table

    def locate(self, units: Sequence[str], boots: Sequence[str], streams: np.ndarray,
               starts: np.ndarray) -> np.ndarray:
        if not self._archived() or not len(units):
            return np.zeros(len(units), np.int64)
        pa = pyarrow_module()
        keys = pa.table({"unit_id": pa.array(units, pa.string()), "boot_id": pa.array(boots, pa.string()),
                         "stream": pa.array(np.asarray(streams, np.int64)),
                         "start_sample": pa.array(np.asarray(starts, np.int64)),
                         "pos": pa.array(np.arange(len(units), dtype=np.int64))})
        self.con.register("located", keys)
        try:
            found = self.con.execute("""SELECT coalesce(w.window_id, 0) AS window_id FROM located k
                                        LEFT JOIN windows w ON w.unit_id = k.unit_id AND w.boot_id = k.boot_id
                                        AND w.stream = k.stream AND w.start_sample = k.start_sample
                                        QUALIFY row_number() OVER (PARTITION BY k.pos ORDER BY w.window_id) = 1
                                        ORDER BY k.pos""").fetchnumpy()["window_id"]
        finally:
            self.con.unregister("located")
        return np.asarray(found, np.int64)

    def embeddings(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        wanted = self._ids(ids)
        direct = self._by_span(wanted)
        if direct is not None:
            return direct
        rows = self.con.execute(f"""SELECT w.shard, list(q.pos - 1), list(w.shard_row) FROM {WANTED} q
                                    JOIN windows w USING (window_id) GROUP BY w.shard""",
                                {"ids": wanted.tolist()}).fetchall()
        self._all_found(len(wanted), sum(len(pos) for _, pos, _ in rows))
        out: np.ndarray | None = None
        for shard, positions, shard_rows in rows:
            matrix = self.shard(shard).gather(np.asarray(shard_rows, np.int64))
            if out is None:
                out = np.empty((len(wanted), matrix.shape[1]), np.float32)
            out[np.asarray(positions)] = normalised(matrix)
        return out if out is not None else np.zeros((0, 0), np.float32)

    def _by_span(self, wanted: np.ndarray) -> np.ndarray | None:
        """:meth:`embeddings` without a query when every shard holds one run of ids from row 0 (how ``insert``
        writes them): a window's shard and row follow from its id. None when that does not hold for these ids."""
        if self._spans is None:
            found = run(self.con, """SELECT min(window_id), max(window_id), shard FROM windows GROUP BY shard
                                     HAVING count(*) = max(window_id) - min(window_id) + 1 AND min(shard_row) = 0
                                        AND max(shard_row) = count(*) - 1 ORDER BY 1""")
            self._spans = (np.array([f[0] for f in found], np.int64), np.array([f[1] for f in found], np.int64),
                           [str(f[2]) for f in found])
        firsts, lasts, names = self._spans
        place = np.searchsorted(firsts, wanted, side="right") - 1
        if not len(wanted) or place.min() < 0 or np.any(wanted > lasts[place]):
            return None
        order = np.argsort(place, kind="stable")
        bounds = np.flatnonzero(np.diff(place[order])) + 1
        out: np.ndarray | None = None
        for positions in np.split(order, bounds):  # shard by shard, each read once
            shard = place[positions[0]]
            matrix = self.shard(names[shard]).gather(wanted[positions] - firsts[shard])
            if out is None:
                out = np.empty((len(wanted), matrix.shape[1]), np.float16)
            out[positions] = matrix
        return normalised(out) if out is not None else None

    def _ids(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        if not self._archived():
            require_windows(self)
        return np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), np.int64)

    def _all_found(self, wanted: int, found: int) -> None:
        if found != wanted:
            raise CollectError(f"{wanted - found} of {wanted} window ids are not in {self.db_path}",
                               "take window ids from this database's archive")

    def chunks(self, where: str = "TRUE", params: list[Any] | None = None,
               keep: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(window ids, their ``(n, D)`` float16 rows, memory-mapped) of the windows matching SQL ``where``,
        page by page in window order. Each shard's pages are released once read; ``keep=False`` also unmaps it
        (a pass over the whole archive, such as indexing it, then holds one shard's map and file at a time)."""
        yield from ((ids, matrix) for ids, matrix, _ in self._pieces(where, params, keep))

    def _pieces(self, where: str, params: list[Any] | None,
                keep: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[float, float] | None]]:
        """:meth:`chunks` with each piece's shard's norm bounds (:attr:`~desk.archive.shardfile.Shard.norms`)."""
        for shard, rows, listed in shards(self.con, where, params):
            ids, mapped = id_array(listed), self.shard(shard)
            for positions, matrix in mapped.pieces(rows):
                yield ids[positions], matrix, mapped.norms
            mapped.release()
            if not keep:
                del self._shards[shard]

    def _unmap(self) -> None:
        """Release and forget every mapped shard (their pages stay in the OS page cache)."""
        for mapped in self._shards.values():
            mapped.release()
        self._shards.clear()

    def scan(self, queries: np.ndarray, where: WindowFilter = EVERY_WINDOW) -> Iterator[Scored]:
        if not self._archived():
            return
        step = max(1, SCAN_CELLS // max(queries.shape[1], 1))
        for ids, matrix in self.chunks(*self._filter(where)):
            for first in range(0, len(ids), step):
                yield Scored(ids[first : first + step], cosines(matrix[first : first + step], queries))

    def ann(self) -> IvfIndex | None:
        """The approximate index beside the archive, None while there is none (or it is of the earlier numpy
        layout; an IVF-SQ8 index of the earlier faiss layout is searched as it is until collect rebuilds it)."""
        if self._index is None and (self.root / INDEX_DIR).is_dir():
            self._index = IvfIndex(self.root / INDEX_DIR)
        return self._index if self._index is not None and self._index.segments else None

    def index(self) -> int:
        """Index the windows archived since the last call (none below :data:`~desk.archive.ivf.MIN_WINDOWS`);
        returns how many were indexed. Existing segments are never rebuilt; an index of an earlier layout
        (numpy, IVF-SQ8) is replaced by one of this layout."""
        total = self.count()
        if total < MIN_WINDOWS:
            return 0
        index = IvfIndex(self.root / INDEX_DIR)
        index.clear_legacy()
        if not index.trained:
            sample = self.embeddings(self._spread(training_rows(total)))
            self._unmap()  # the sample touched every shard: one map and open file each
            index.train(sample, total)
        self._index = index
        return index.append(self.chunks("window_id > ?", [index.last_id], keep=False))

    def _spread(self, count: int) -> np.ndarray:
        """``count`` window ids spread evenly over the archive, without listing every id when they run
        1..N without gaps (how ``insert`` numbers them)."""
        first, last, total = run(self.con, "SELECT min(window_id), max(window_id), count(*) FROM windows")[0]
        places = np.linspace(0, total - 1, count).astype(np.int64)
        return np.unique(first + places if last - first + 1 == total else self.match()[places])

    def files(self, where: WindowFilter = EVERY_WINDOW) -> list[StoredRows]:
        if not self._archived():
            return []
        sql, params = self._filter(where)
        return [StoredRows(str((self.root / shard).resolve()), rows, ids)
                for shard, rows, ids in shards(self.con, sql, params)]

    def nearest(self, query: np.ndarray, k: int, where: WindowFilter = EVERY_WINDOW,
                approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        index = self.ann() if approximate and self._archived() else None
        if index is None:
            return self._exact(query, k, where)
        matched, total = self.count(where), self.count()
        if matched < total and matched <= EXACT_BELOW:  # a narrow filter: its exact scan is as fast as the index
            return self._exact(query, k, where)
        wanted = max(CANDIDATES_PER_HIT * k, MIN_CANDIDATES, total // WINDOWS_PER_CANDIDATE)
        ids = index.candidates(query, int(wanted * total / max(matched, 1)))
        if matched < total:
            ids = self._within(ids, where)
        ids = np.sort(ids[:wanted])
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # einsum, not BLAS: a matrix-vector product of a few thousand rows in BLAS's threads cost 3-20 ms of CPU
        scores = np.einsum("ij,j->i", self.embeddings(ids), np.ravel(query).astype(np.float32))
        return top_of([Scored(ids, scores[:, None])], k)

    def _exact(self, query: np.ndarray, k: int, where: WindowFilter) -> tuple[np.ndarray, np.ndarray]:
        """:func:`top_of` the :meth:`scan` of ``where``, bit for bit, computing norms only where they can change it."""
        return bounded_top(self._pieces(*self._filter(where)) if self._archived() else iter(()), query, k, SCAN_CELLS)

    def _within(self, ids: np.ndarray, where: WindowFilter) -> np.ndarray:
        """``ids`` (best first) that match ``where``, in the same order (only these ids are looked up)."""
        sql, params = self._filter(where)
        found = self.con.execute(f"""SELECT c.pos FROM (SELECT unnest(?::BIGINT[]) AS window_id,
                                         generate_subscripts(?::BIGINT[], 1) AS pos) c
                                     JOIN windows USING (window_id) WHERE {sql} ORDER BY c.pos""",
                                 [ids.tolist(), ids.tolist(), *params]).fetchnumpy()["pos"]
        return ids[np.asarray(found, np.int64) - 1]

    def insert(self, batch: WindowBatch) -> int:
        done = run(self.con, "SELECT max(records) FROM embedding_segments WHERE unit_id = ? AND boot_id = ? AND "
                             "segment = ?", [batch.unit_id, batch.boot_id, batch.segment])[0][0]
        count = len(batch.start_sample)
        if not count or (done is not None and done >= count):
            return 0
        self._check_shape(batch)
        added = self._insert_new(batch)
        self._spans, self._counts, self._spaces = None, {}, {}
        run(self.con, "INSERT INTO embedding_segments VALUES (?, ?, ?, ?, ?)",
            [batch.unit_id, batch.boot_id, batch.segment, count, batch.card])
        return added

    def _insert_new(self, batch: WindowBatch) -> int:
        keep = self._new_rows(batch)
        if not len(keep):
            return 0
        utc = batch.start_utc_us[keep]
        days = np.where(utc != UNKNOWN_UTC_US, utc // (86_400 * MICROSECONDS_PER_SECOND), -1)
        next_id = int(run(self.con, "SELECT coalesce(max(window_id), 0) + 1 FROM windows")[0][0])
        for day in np.unique(days):
            rows = keep[days == day]
            ids = np.arange(next_id, next_id + len(rows), dtype=np.int64)
            next_id += len(rows)
            label = UNKNOWN_DAY if day < 0 else str(np.datetime64(int(day), "D"))
            shard = (Path(f"unit={safe_name(batch.unit_id)}") / f"day={label}" /
                     f"{Path(batch.segment).stem}_{ids[0]}.parquet")
            write_shard(self.root / shard, ids, batch.vectors[rows])
            self._insert_rows(batch, rows, ids, str(shard))
        return len(keep)

    def _check_shape(self, batch: WindowBatch) -> None:
        """Refuse vectors that are not ``(N, D)`` float, or whose ``D`` differs from the archive's for their space."""
        vectors, where = batch.vectors, f"{batch.card}: segment {batch.segment}"
        if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
            raise WindowShapeError(f"{where}: window vectors of shape {vectors.shape} and type {vectors.dtype} "
                                   "are not a (windows, dimension) float array; skipped",
                                   "the segment is damaged: copy the card again")
        space = batch.embedding_space or batch.model_sha256
        found = run(self.con, f"SELECT shard FROM windows WHERE {self._space_key} = ? LIMIT 1", [space])
        held = self.shard(found[0][0]).pages[0][1].shape[1] if found else vectors.shape[1]
        if vectors.shape[1] != held:
            raise WindowShapeError(
                f"{where}: {vectors.shape[1]}-dimensional windows, but the archive holds {held}-dimensional "
                f"windows of embedding space {short_space(space)}; skipped",
                "the card was written by another model: collect it into its own database "
                "(logs collect CARD --into other.duckdb), or its windows need their own embedding space")

    def _new_rows(self, batch: WindowBatch) -> np.ndarray:
        """Indices of windows whose (stream, start sample) this boot has not archived yet (first of duplicates)."""
        starts = np.asarray(batch.start_sample, np.int64)
        keys = np.asarray(batch.stream, np.int64) << 40 | starts  # start samples stay below 2**40 (254 days, 48 kHz)
        _, first = np.unique(keys, return_index=True)
        existing = run(self.con, "SELECT stream, start_sample FROM windows WHERE unit_id = ? AND boot_id = ? AND "
                                 "start_sample BETWEEN ? AND ?",
                       [batch.unit_id, batch.boot_id, int(starts.min()), int(starts.max())])
        if existing:
            known = np.array([(int(s) << 40) | int(x) for s, x in existing], np.int64)
            first = first[~np.isin(keys[first], known)]
        return np.sort(first)

    def _insert_rows(self, batch: WindowBatch, rows: np.ndarray, ids: np.ndarray, shard: str) -> None:
        pa = pyarrow_module()
        count = len(rows)
        utc = batch.start_utc_us[rows]
        known = utc != UNKNOWN_UTC_US
        starts, ends = batch.start_sample[rows], batch.end_sample[rows]
        end_us = utc + (ends - starts) * MICROSECONDS_PER_SECOND // batch.sample_rate
        stamp = pa.timestamp("us")
        table = pa.table({
            "window_id": ids, "unit_id": [batch.unit_id] * count, "deployment_id": [batch.deployment_id] * count,
            "boot_id": [batch.boot_id] * count, "stream": np.asarray(batch.stream[rows], np.int32),
            "start_sample": np.asarray(starts, np.int64), "end_sample": np.asarray(ends, np.int64),
            "sample_rate": np.full(count, batch.sample_rate, np.int32),
            "start_utc": pa.array(utc, stamp, mask=~known), "end_utc": pa.array(end_us, stamp, mask=~known),
            "clock_sync": [batch.clock_sync[i] for i in rows],
            "source_path": pa.array([batch.source_path] * count, pa.string()),
            "source_offset": pa.array(starts, pa.int64(), mask=np.full(count, batch.source_path is None)),
            "model_sha256": [batch.model_sha256] * count, "shard": [shard] * count,
            "shard_row": np.arange(count, dtype=np.int32), "card": [batch.card] * count,
            "embedding_space": [batch.embedding_space] * count})
        self.con.register("new_windows", table)
        try:
            run(self.con, "INSERT INTO windows BY NAME SELECT * FROM new_windows")
        finally:
            self.con.unregister("new_windows")


def score_file(stored: StoredRows, queries: np.ndarray) -> Iterator[Scored]:
    """:func:`desk.archive.windows.read_rows` for this store's shards (the same pages and product as ``scan``);
    each chunk's mapped pages leave this process's memory once it is scored, so a reader holds one chunk."""
    step = max(1, SCAN_CELLS // max(queries.shape[1], 1))
    shard = Shard(Path(stored.path))
    ids = id_array(stored.window_ids)
    for positions, matrix in shard.pieces(stored.rows):
        for first in range(0, len(positions), step):
            scored = Scored(ids[positions[first : first + step]],
                            cosines(matrix[first : first + step], queries))
            shard.release()
            yield scored
