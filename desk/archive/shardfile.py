"""One archive shard: one Parquet file that is both the archive of record and what scans memory-map.

A shard holds ``window_id`` (int64) and ``embedding`` (``FixedSizeList<float16, D>``, unit length), written
uncompressed, PLAIN, without statistics, in ``DATA_PAGE_V2`` pages: pyarrow reads it as a fixed-size list of
halffloat, DuckDB as ``FLOAT[]``, and a scan maps each page's value run as an ``(rows, D)`` float16 matrix
(:mod:`desk.archive.pages`) — no second copy, no decode. Chosen by measurement (BENCHMARKS.md, *Season
archive*): a decoded FixedSizeList column costs ~5 µs a window, an Arrow IPC file maps as well but DuckDB
cannot read it without an extension, a ``fixed_size_binary`` column maps as well but is opaque bytes to both.
Shards of the earlier layout (version-1 pages plus a raw ``.f16.npy`` copy) are read by decoding and are
rewritten in place by :func:`migrate_shard` (``logs collect`` does it).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import mmap
import os
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.pages import PageError, value_runs
from desk.collect.database import CollectError
from edge.card.cardformat import TEMP_PREFIX

EMBEDDING_COLUMN = "embedding"
ID_COLUMN = "window_id"
FLOAT16_BYTES = 2
ROWS_PER_GROUP = 1 << 16
"""Rows per Parquet row group (the page size limit, not this, decides the pages: ~20 000 rows each)."""
LEGACY_SUFFIXES = (".f16.npy", ".codes.npy")
"""Side files of the earlier layout: a raw float16 scan copy and the prefilter's sign codes."""
NORMS_KEY = "biolingual.embedding_norms"
"""Key of the shard's Parquet key-value metadata holding :func:`norm_bounds` as JSON ``{"min": …, "max": …}``."""
NORM_ROWS = 4096
"""Rows whose norms are summed at once when a shard is written (32 MB of float64 at D = 512)."""
OUTWARD = 1e-12
"""Relative widening of the recorded bounds: a float64 sum of 512 float16 squares is off by < 6e-14 of it."""


def pyarrow_module() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise CollectError("pyarrow is not installed", "pip install 'biolingual-edge[desk]'") from e
    return pyarrow


def write_shard(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    """``ids`` ``(N,)`` and ``vectors`` ``(N, D)`` float16 as one shard, through a temp file and a rename."""
    pa = pyarrow_module()
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    element = pa.field("element", pa.float16(), nullable=False)
    schema = pa.schema([pa.field(ID_COLUMN, pa.int64(), nullable=False),
                        pa.field(EMBEDDING_COLUMN, pa.list_(element, dim), nullable=False)])
    halves = np.ascontiguousarray(vectors, np.float16)
    low, high = norm_bounds(halves)
    schema = schema.with_metadata({NORMS_KEY: json.dumps({"min": low, "max": high})})
    flat = pa.array(halves.reshape(-1), type=pa.float16())
    table = pa.table([pa.array(ids, pa.int64()), pa.FixedSizeListArray.from_arrays(flat, dim)], schema=schema)
    temp = path.with_name(TEMP_PREFIX + path.name)
    pa.parquet.write_table(table, temp, compression="none", use_dictionary=False, write_statistics=False,
                           data_page_version="2.0", row_group_size=ROWS_PER_GROUP, data_page_size=1 << 30)
    temp.replace(path)


def norm_bounds(vectors: np.ndarray) -> tuple[float, float]:
    """(smallest, largest) Euclidean norm of the non-zero rows of ``vectors`` ``(N, D)`` float16 as stored, summed
    in float64 and widened by :data:`OUTWARD`; (0, 0) when every row is zero (a zero row's cosine is 0 whatever
    the query, so it needs no bound), (0, largest float) — no bound at all — when a value is not finite. Search
    ranks by dot products within these bounds (:mod:`desk.archive.bounded`).
    """
    low, high = math.inf, 0.0
    for first in range(0, len(vectors), NORM_ROWS):
        block = vectors[first : first + NORM_ROWS].astype(np.float64)
        squares = np.einsum("ij,ij->i", block, block)
        if not np.all(np.isfinite(squares)):
            return 0.0, sys.float_info.max
        nonzero = squares[squares > 0]
        if len(nonzero):
            low, high = min(low, float(nonzero.min())), max(high, float(nonzero.max()))
    if low == math.inf:
        return 0.0, 0.0
    return math.sqrt(low) * (1 - OUTWARD), math.sqrt(high) * (1 + OUTWARD)


class Shard:
    """A shard's embeddings as memory-mapped pages: ``pages`` is a list of (first row, ``(n, D)`` float16)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        mapped = _mapped(path)
        pages = None if mapped is None else mapped[1]
        self._map = None if mapped is None else mapped[0]
        self._page_offsets = [] if mapped is None else mapped[2]
        """Where each mapped page's values start in the file."""
        self.norms = None if mapped is None else mapped[3]
        """(smallest, largest) norm of the shard's non-zero rows (:func:`norm_bounds`), None when the shard does not
        record them (written before they were, or unreadable bounds): scans then compute every row's norm."""
        self.mapped = pages is not None
        """True when the pages are views of the file (the current layout), False when they were decoded."""
        self.pages = pages if pages is not None else [(0, _decoded(path))]
        self.rows = sum(len(m) for _, m in self.pages)
        self._firsts = np.array([first for first, _ in self.pages], np.int64)
        self._first_rows = self._firsts.tolist()
        self.bytes_read = 0
        """Bytes :meth:`gather` has read from the file (the rows asked for, nothing around them)."""
        self._handle: int | None = None
        """The file, opened by the first :meth:`gather` and kept for the next ones (closed by :meth:`close`)."""
        self._closer: weakref.finalize | None = None

    def close(self) -> None:
        """Close the file :meth:`gather` keeps open (a shard dropped unclosed closes it when collected)."""
        if self._closer is not None:
            self._closer()
        self._handle = self._closer = None

    def _file(self) -> int:
        """The shard file, opened for random reads on first use: a query gathers from hundreds of shards, and an
        open, advise and close per shard and query cost ≈ 5.5 µs of CPU each (benchmarks/shard_gather.py)."""
        if self._handle is None:
            handle = os.open(self.path, os.O_RDONLY)
            os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_RANDOM)
            self._handle, self._closer = handle, weakref.finalize(self, os.close, handle)
        return self._handle

    def release(self) -> None:
        """Drop the mapped pages from this process's resident memory (they stay in the OS page cache and fault
        back in when read again), so a scan's RSS stays at one shard whatever the archive's size."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def pieces(self, rows: slice | np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in ``rows``, the ``(n, D)`` float16 embeddings of those rows) page by page, in row order."""
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self.rows)
            for first, matrix in self.pages:
                lo, hi = max(start, first), min(stop, first + len(matrix))
                if lo < hi:
                    yield np.arange(lo - start, hi - start), matrix[lo - first : hi - first]
            return
        rows = np.asarray(rows, np.int64)
        page = np.searchsorted(self._firsts, rows, side="right") - 1
        for index in np.unique(page):
            first, matrix = self.pages[index]
            inside = np.flatnonzero(page == index)
            yield inside, matrix[rows[inside] - first]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), D)`` float16 copies of the given rows, in that order. A mapped shard reads exactly those
        rows' bytes (one ``preadv`` per run of consecutive rows, in file order, without read-ahead), so a
        re-rank's few thousand rows scattered over the archive cost a system call each, not a page fault that
        maps ~64 KB around each 1 KB row, and leave nothing mapped in this process."""
        wanted = np.asarray(rows, np.int64).tolist()
        dim = self.pages[0][1].shape[1]
        out = np.empty((len(wanted), dim), np.float16)
        if not wanted:
            return out
        if min(wanted) < 0 or max(wanted) >= self.rows:
            raise IndexError(f"rows outside 0..{self.rows - 1} of shard {self.path}")
        if not self.mapped:
            out[:] = self.pages[0][1][wanted]
            return out
        order = sorted(range(len(wanted)), key=wanted.__getitem__)  # a re-rank asks a few rows a shard: no numpy
        read = np.empty_like(out)
        handle = self._file()
        start = 0
        while start < len(order):
            row = wanted[order[start]]
            page = bisect.bisect_right(self._first_rows, row) - 1
            ends = self._first_rows[page + 1] if page + 1 < len(self._first_rows) else self.rows
            stop = start + 1
            while stop < len(order) and wanted[order[stop]] == row + stop - start < ends:
                stop += 1
            into = read[start:stop]
            at = self._page_offsets[page] + (row - self._first_rows[page]) * into.strides[0]
            if os.preadv(handle, [into.data], at) != into.nbytes:
                raise CollectError(f"archive shard {self.path} ends before row {row}",
                                   "collect the cards again into a fresh database")
            start = stop
        out[order] = read
        self.bytes_read += read.nbytes
        return out


def _mapped(path: Path) -> tuple[mmap.mmap, list[tuple[int, np.ndarray]], list[int], tuple[float, float] | None] \
        | None:
    """The embedding column's pages as views of the memory-mapped file, where each starts in it and the recorded
    norm bounds; None when its layout cannot be mapped."""
    try:
        with open(path, "rb") as handle:
            found = os.fstat(handle.fileno())
            layout = _layout(path, found.st_ino, found.st_size, found.st_mtime_ns)
            if layout is None:
                return None
            whole = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise CollectError(f"archive shard {path} is missing or unreadable: {e}",
                           "collect the cards again into a fresh database") from e
    dim, runs, norms = layout
    return whole, [(first, np.frombuffer(whole, np.float16, rows * dim, offset).reshape(rows, dim))
                   for first, offset, rows in runs], [offset for _, offset, _ in runs], norms


@functools.lru_cache(maxsize=1 << 16)
def _layout(path: Path, inode: int, size: int, mtime_ns: int) -> \
        tuple[int, tuple[tuple[int, int, int], ...], tuple[float, float] | None] | None:
    """(D, (first row, byte offset, rows) of each page's values, the recorded norm bounds) of the shard file at
    ``path`` as it is now (a shard is written once, through a rename: its inode, size and time say which file this
    is), read from its Parquet footer and page headers once per process; None when its layout cannot be mapped."""
    pa = pyarrow_module()
    try:
        metadata = pa.parquet.ParquetFile(path).metadata
        leaves = [metadata.schema.column(i).path.split(".")[0] for i in range(metadata.num_columns)]
        column = leaves.index(EMBEDDING_COLUMN)
        with open(path, "rb") as handle:
            whole = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise CollectError(f"archive shard {path} is missing or unreadable: {e}",
                           "collect the cards again into a fresh database") from e
    dim = metadata.schema.to_arrow_schema().field(EMBEDDING_COLUMN).type.list_size
    runs: list[tuple[int, int, int]] = []
    first = 0
    try:
        with memoryview(whole) as data:
            for group in range(metadata.num_row_groups):
                chunk = metadata.row_group(group).column(column)
                if chunk.dictionary_page_offset is not None:
                    return None
                start = chunk.data_page_offset
                for run in value_runs(data, start, start + chunk.total_compressed_size, FLOAT16_BYTES):
                    if run.length != run.rows * dim * FLOAT16_BYTES:
                        return None
                    runs.append((first, run.offset, run.rows))
                    first += run.rows
    except PageError:
        return None
    finally:
        whole.close()
    return (dim, tuple(runs), _norms(metadata.metadata)) if first == metadata.num_rows else None


def _norms(metadata: dict[bytes, bytes] | None) -> tuple[float, float] | None:
    """The norm bounds a shard's key-value metadata records; None when absent or not two finite ordered numbers."""
    try:
        found = json.loads((metadata or {})[NORMS_KEY.encode()])
        low, high = float(found["min"]), float(found["max"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if math.isfinite(high) and 0 <= low <= high else None


def _decoded(path: Path) -> np.ndarray:
    """The embeddings of a shard that cannot be mapped: its legacy scan copy, else decoded from the Parquet."""
    copy = path.with_suffix(LEGACY_SUFFIXES[0])
    if copy.is_file():
        try:
            return np.asarray(np.load(copy, mmap_mode="r"))
        except (OSError, ValueError):
            pass  # damaged scan copy: the Parquet shard is the record
    pa = pyarrow_module()
    try:
        column = pa.parquet.read_table(path, columns=[EMBEDDING_COLUMN])[EMBEDDING_COLUMN]
    except (OSError, pa.ArrowException) as e:
        raise CollectError(f"archive shard {path} is missing or unreadable: {e}",
                           "collect the cards again into a fresh database") from e
    array = column.combine_chunks()
    return np.asarray(array.values.to_numpy(zero_copy_only=False)).reshape(-1, array.type.list_size)


def migrate_shard(path: Path) -> bool:
    """Rewrite a shard of an earlier layout (version-1 pages with a raw copy beside them, or without its norm
    bounds) as one mappable Parquet file with its bounds and drop its side files; False when it already was one."""
    shard = Shard(path)
    if shard.mapped and shard.norms is not None:
        return False
    pa = pyarrow_module()
    ids = pa.parquet.read_table(path, columns=[ID_COLUMN])[ID_COLUMN].to_numpy()
    write_shard(path, ids, shard.gather(np.arange(shard.rows)))
    for suffix in LEGACY_SUFFIXES:
        path.with_suffix(suffix).unlink(missing_ok=True)
    return True
