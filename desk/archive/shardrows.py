"""Which rows of which archive shard match a filter: the ``windows`` table read one shard at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.collect.database import run

if TYPE_CHECKING:
    import duckdb


def shards(con: duckdb.DuckDBPyConnection, where: str = "TRUE", params: list[Any] | None = None) -> \
        Iterator[tuple[str, np.ndarray | slice, np.ndarray | range]]:
    """(shard, its rows that match ``where``, their window ids) in window order, one shard at a time (a pass over
    the archive holds one shard's ids, not every id).

    Rows are a ``slice`` and ids a ``range`` when they are one contiguous run (a whole shard, or a time range of
    one) — the usual case, answered from per-shard aggregates without moving a row id through Python.
    """
    found = run(con, f"""SELECT shard, count(*), min(window_id), max(window_id), min(shard_row), max(shard_row)
                         FROM windows WHERE {where} GROUP BY shard ORDER BY min(window_id)""", params or [])
    for shard, count, first_id, last_id, first_row, last_row in found:
        if last_id - first_id + 1 == count and last_row - first_row + 1 == count:
            yield shard, slice(first_row, last_row + 1), range(first_id, last_id + 1)
            continue
        rows, ids = run(con, f"""SELECT list(shard_row ORDER BY shard_row), list(window_id ORDER BY shard_row)
                                 FROM windows WHERE shard = ? AND ({where})""", [shard, *(params or [])])[0]
        yield shard, np.asarray(rows, np.int64), np.asarray(ids, np.int64)
