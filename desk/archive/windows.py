"""The one door to the season archive: :class:`WindowStore`, what every desk command reads windows through.

``logs collect`` inserts windows through it; ``logs rescore``, ``search``, ``review`` and ``train-head`` read
window metadata, embeddings and cosines through it and never see a file, a shard or the ``windows`` table.
The shape follows perch-hoplite's database interface (insert windows, embeddings by id, window ids matched by
a filter, a brute-force or approximate nearest-neighbour search), so the storage behind it can change without
touching the commands. :func:`open_store` names the one implementation today
(:class:`desk.archive.store.DuckShardStore`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge.errors import EdgeError

if TYPE_CHECKING:
    import pyarrow as pa

DESCRIPTION = ("window_id", "unit_id", "deployment_id", "boot_id", "stream", "start_sample", "end_sample",
               "sample_rate", "start_utc", "end_utc", "clock_sync", "source_path", "source_offset", "model_sha256",
               "card", "recording", "start", "stop", "samples", "space")
"""Columns of :meth:`WindowStore.windows` (and of :meth:`WindowStore.tally`). Samples count on the unit's stream
clock; ``start_utc``/``end_utc`` are naive UTC (null when the clock was unknown); ``source_path``/``source_offset``
(samples) are set for windows of ``analyze --embeddings``. Derived: ``recording`` (the file, else
``unit/boot/streamN``), ``start``/``stop`` (the window's place in that recording, samples), ``samples`` (its
length), ``space`` (its embedding-space key, see :meth:`WindowStore.spaces`)."""


@dataclass(frozen=True)
class WindowFilter:
    """Which windows: every field left ``None`` matches all; a tuple matches any of its values (empty: none)."""

    units: tuple[str, ...] | None = None
    boots: tuple[str, ...] | None = None
    streams: tuple[int, ...] | None = None
    since: datetime | None = None
    """Windows starting at or after this instant (naive means UTC); windows without a UTC time never match."""
    until: datetime | None = None
    """Windows starting before this instant."""
    spaces: tuple[str, ...] | None = None
    """Embedding-space keys of the windows (see :meth:`WindowStore.spaces`)."""


EVERY_WINDOW = WindowFilter()


class WindowShapeError(EdgeError):
    """A batch's vectors are not ``(N, D)`` float, or not of the dimension the archive holds for their space."""


@dataclass(frozen=True)
class WindowBatch:
    """Windows of one unit boot from one source segment, to insert (``N`` windows, ``D``-dimensional)."""

    segment: str
    """Name of the source segment; a segment already taken whole is not inserted again."""
    unit_id: str
    deployment_id: str
    boot_id: str
    sample_rate: int
    model_sha256: str
    source_path: str | None
    """The recording ``analyze`` cut the windows from (their start samples are offsets in it); None on a unit."""
    card: str
    stream: np.ndarray
    """``(N,)`` int."""
    start_sample: np.ndarray
    """``(N,)`` int64."""
    end_sample: np.ndarray
    start_utc_us: np.ndarray
    """``(N,)`` int64 microseconds since the epoch; ``edge.card.embedformat.UNKNOWN_UTC_US`` when unknown."""
    clock_sync: list[str]
    vectors: np.ndarray
    """``(N, D)`` float16, unit length."""
    embedding_space: str = ""
    """The space the unit recorded (:mod:`edge.model.space`); ``""`` for windows from before spaces were named."""


@dataclass(frozen=True)
class Scored:
    """One chunk of a scan: window ids (ascending) and their cosines to the queries."""

    window_ids: np.ndarray
    """``(n,)`` int64."""
    cosines: np.ndarray
    """``(n, K)`` float32."""


@dataclass(frozen=True)
class StoredRows:
    """Where some windows' embeddings lie, for a reader on another machine: one file and rows of it.

    Read it with :func:`read_rows` anywhere the file's path is visible (storage every node sees); no database
    connection travels with it, so a cluster job reads each file once, memory bounded by one file."""

    path: str
    """The file (absolute)."""
    rows: slice | np.ndarray
    """Its rows holding the windows: a slice, or ``(n,)`` int64 row numbers."""
    window_ids: np.ndarray | range
    """``(n,)`` int64 ids of those windows, in row order (ascending); a ``range`` when they run without gaps (the
    usual case: a listing of a 10 M archive then holds no 80 MB of ids). :func:`id_array` makes it an array."""


def id_array(ids: np.ndarray | range) -> np.ndarray:
    """Window ids as an ``(n,)`` int64 array (a ``range`` of them made one)."""
    return np.arange(ids.start, ids.stop, dtype=np.int64) if isinstance(ids, range) else ids


class WindowStore(Protocol):
    """Archived window embeddings and their metadata. Window ids are unique positive integers."""

    def insert(self, batch: WindowBatch) -> int:
        """Add the batch's windows not archived yet (same unit, boot, stream and start sample); returns how many.
        Raises :class:`WindowShapeError` (nothing added) when its vectors are not 2-D float or not of the
        dimension the archive already holds for its embedding space."""

    def count(self, where: WindowFilter = EVERY_WINDOW) -> int:
        """Windows matching ``where`` (0 for an archive that holds none yet)."""

    def tally(self, columns: tuple[str, ...], where: WindowFilter = EVERY_WINDOW) -> dict[tuple[Any, ...], int]:
        """Windows matching ``where`` per distinct value of ``columns`` (names from :data:`DESCRIPTION`)."""

    def spaces(self, where: WindowFilter = EVERY_WINDOW) -> dict[str, int]:
        """Windows per embedding-space key: the space each window recorded, else (windows from before spaces were
        named) the sha256 of the model file that computed it. Only windows of one space are comparable; see
        :func:`desk.archive.spaces.choose_space`."""

    def match(self, where: WindowFilter = EVERY_WINDOW, limit: int | None = None) -> np.ndarray:
        """Ids ``(n,)`` int64 of the windows matching ``where``, ascending."""

    def windows(self, ids: Iterable[int] | np.ndarray, columns: tuple[str, ...] = DESCRIPTION) -> pa.Table:
        """Metadata rows of ``ids`` in that order (``columns`` of :data:`DESCRIPTION`); unknown ids raise."""

    def locate(self, units: Sequence[str], boots: Sequence[str], streams: np.ndarray,
               starts: np.ndarray) -> np.ndarray:
        """Ids ``(n,)`` int64 of the windows that start at each (unit, boot, stream, start sample), aligned;
        0 where no window is archived there."""

    def embeddings(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """``(N, D)`` float32 unit-length embeddings of ``ids`` in that order; unknown ids raise."""

    def scan(self, queries: np.ndarray, where: WindowFilter = EVERY_WINDOW) -> Iterator[Scored]:
        """Exact cosines of every window matching ``where`` against unit ``queries`` ``(D, K)`` float32, chunk by
        chunk in window order (memory stays at one chunk whatever the archive's size)."""

    def nearest(self, query: np.ndarray, k: int, where: WindowFilter = EVERY_WINDOW,
                approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines) of the ``k`` windows nearest unit ``query`` ``(D,)``, best first (ties by id);
        ``approximate``: candidates from the index (when the archive has one), re-ranked exactly; filters still
        apply exactly."""

    def index(self) -> int:
        """Bring the approximate index up to date with the windows inserted so far (adds, never rebuilds);
        returns how many windows were indexed."""

    def files(self, where: WindowFilter = EVERY_WINDOW) -> list[StoredRows]:
        """The files holding the windows matching ``where``, in window order: :meth:`scan` of them, read by
        :func:`read_rows` one by one (a cluster job spreads them over its workers)."""

    def close(self) -> None:
        """Release files and connections."""

    def __enter__(self) -> WindowStore: ...

    def __exit__(self, *exc: object) -> None: ...


def read_rows(stored: StoredRows, queries: np.ndarray) -> Iterator[Scored]:
    """Cosines of the windows in ``stored`` against unit ``queries`` ``(D, K)``: the chunks
    :meth:`WindowStore.scan` yields for them, bit for bit, read as they are taken (memory: one chunk)."""
    from desk.archive.store import score_file

    return score_file(stored, queries)


def open_store(db_path: Path | Sequence[Path], writable: bool = False) -> WindowStore:
    """The archive that belongs to collection database ``db_path`` (read-only unless ``writable``); several
    databases read as one (:class:`desk.archive.many.ManyStores`, window ids translated)."""
    from desk.archive.store import DuckShardStore

    if isinstance(db_path, Path):
        return DuckShardStore(db_path, writable)
    paths = list(dict.fromkeys(Path(p).resolve() for p in db_path))
    if len(paths) == 1:
        return DuckShardStore(paths[0], writable)
    from desk.archive.many import ManyStores

    stores: list[WindowStore] = []
    try:
        for path in paths:
            stores.append(DuckShardStore(path, writable))
        return ManyStores(stores, [str(p) for p in paths])
    except BaseException:
        for store in stores:
            store.close()
        raise


def require_windows(store: WindowStore) -> int:
    """Windows in the archive; a typed error when there are none (or the database predates the archive)."""
    from desk.collect.database import CollectError

    total = store.count()
    if total == 0:
        raise CollectError("the archive holds no window embeddings",
                           "collect cards written with storage.embeddings on, or run `analyze --embeddings DIR` "
                           "and `logs collect DIR`")
    return total


def top_of(chunks: Iterable[Scored], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cosines) of the ``k`` best of single-query ``chunks``, best first, ties by ascending id — at the cut
    too, so the answer does not depend on how the windows were chunked (a cluster's per-file best, merged, is the
    local scan's)."""
    best_ids = np.zeros(0, np.int64)
    best_scores = np.zeros(0, np.float32)
    for chunk in chunks:
        ids, scores = chunk.window_ids, chunk.cosines[:, 0]
        keep = _best(ids, scores, k)
        best_ids = np.concatenate([best_ids, ids[keep]])
        best_scores = np.concatenate([best_scores, scores[keep]])
        keep = _best(best_ids, best_scores, k)
        best_ids, best_scores = best_ids[keep], best_scores[keep]
    order = np.lexsort((best_ids, -best_scores))
    return best_ids[order], best_scores[order]


def _best(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest ``scores``; of those tied with the ``k``-th, the ones of smallest id."""
    if len(scores) <= k:
        return np.arange(len(scores))
    kth = -np.partition(-scores, k - 1)[k - 1]
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)
    return np.concatenate([above, tied[np.argsort(ids[tied], kind="stable")][: k - len(above)]])


def normalised(rows: np.ndarray) -> np.ndarray:
    """float16/float32 rows -> float32 rows of unit length (undoes the fp16 rounding of the norm)."""
    rows = rows.astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    rows *= 1 / np.where(norms > 0, norms, 1)
    return rows
