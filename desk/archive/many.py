"""Many season databases as one archive (years, sites, teams): :class:`ManyStores`, after perch-hoplite's
``MultiDBWrapper``.

Each database keeps its own window ids; the window ids seen through this store carry the database's place in
the list in their high bits (``place << ID_BITS | own id``), so nothing collides and the first database's ids
are its own. Read-only: windows are inserted into one database at a time, by ``logs collect``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.archive.windows import (
    DESCRIPTION,
    EVERY_WINDOW,
    Scored,
    StoredRows,
    WindowBatch,
    WindowFilter,
    WindowStore,
    top_of,
)
from desk.collect.database import CollectError

if TYPE_CHECKING:
    import pyarrow as pa

ID_BITS = 40
"""Bits of a database's own window id (10¹² windows per database); the place in the list sits above them."""
OWN = (1 << ID_BITS) - 1


class ManyStores:
    """Several :class:`~desk.archive.windows.WindowStore` as one, window ids translated."""

    def __init__(self, stores: list[WindowStore], names: Sequence[str] = ()) -> None:
        """``names``: what to call each store in an error (its database file). A boot held by two stores is the
        same card collected twice, and is refused (its windows would count twice)."""
        self.stores = stores
        held: dict[tuple[Any, ...], int] = {}
        for place, store in enumerate(stores):
            for boot in store.tally(("unit_id", "boot_id")):
                first = held.setdefault(boot, place)
                if first != place:
                    what = list(names) or [f"database {n + 1}" for n in range(len(stores))]
                    raise CollectError(f"boot {boot[1]} of unit {boot[0]} is in both {what[first]} and "
                                       f"{what[place]}: the same card collected twice would count twice",
                                       "collect each card into one database only, or pass only one of the two")

    def __enter__(self) -> ManyStores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def insert(self, batch: WindowBatch) -> int:
        raise CollectError("several databases are read together, not written",
                           "collect into one database with `logs collect ... --into DB`")

    def index(self) -> int:
        return 0

    def count(self, where: WindowFilter = EVERY_WINDOW) -> int:
        return sum(store.count(where) for store in self.stores)

    def tally(self, columns: tuple[str, ...], where: WindowFilter = EVERY_WINDOW) -> dict[tuple[Any, ...], int]:
        total: Counter[tuple[Any, ...]] = Counter()
        for store in self.stores:
            total.update(store.tally(columns, where))
        return dict(sorted(total.items(), key=lambda item: tuple((v is None, str(v)) for v in item[0])))

    def spaces(self, where: WindowFilter = EVERY_WINDOW) -> dict[str, int]:
        total: Counter[str] = Counter()
        for store in self.stores:
            total.update(store.spaces(where))
        return dict(total)

    def match(self, where: WindowFilter = EVERY_WINDOW, limit: int | None = None) -> np.ndarray:
        found = np.concatenate([np.zeros(0, np.int64)] + [
            (place << ID_BITS) | store.match(where, limit) for place, store in enumerate(self.stores)])
        return found if limit is None else found[:limit]

    def _split(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), np.int64)
        places = wanted >> ID_BITS
        if len(wanted) and (places.min() < 0 or places.max() >= len(self.stores)):
            raise CollectError(f"window id {int(wanted[places.max() == places][0])} belongs to none of the "
                               f"{len(self.stores)} databases", "take window ids from this archive")
        return wanted, places

    def windows(self, ids: Iterable[int] | np.ndarray, columns: tuple[str, ...] = DESCRIPTION) -> pa.Table:
        import pyarrow as pa

        wanted, places = self._split(ids)
        parts, order = [], []
        for place, store in enumerate(self.stores):
            mine = np.flatnonzero(places == place)
            if not len(mine) and place:
                continue
            table = store.windows(wanted[mine] & OWN, columns)
            if "window_id" in columns:
                table = table.set_column(table.schema.get_field_index("window_id"), "window_id",
                                         pa.array(wanted[mine], pa.int64()))
            parts.append(table)
            order.append(mine)
        table = pa.concat_tables(parts)
        return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))

    def locate(self, units: Sequence[str], boots: Sequence[str], streams: np.ndarray,
               starts: np.ndarray) -> np.ndarray:
        found = np.zeros(len(units), np.int64)
        for place, store in enumerate(self.stores):  # a boot lives in one database (see __init__)
            own = store.locate(units, boots, streams, starts)
            found = np.where((found == 0) & (own > 0), (place << ID_BITS) | own, found)
        return found

    def embeddings(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        wanted, places = self._split(ids)
        out: np.ndarray | None = None
        for place, store in enumerate(self.stores):
            mine = np.flatnonzero(places == place)
            if len(mine):
                rows = store.embeddings(wanted[mine] & OWN)
                if out is None:
                    out = np.empty((len(wanted), rows.shape[1]), np.float32)
                out[mine] = rows
        return out if out is not None else np.zeros((0, 0), np.float32)

    def scan(self, queries: np.ndarray, where: WindowFilter = EVERY_WINDOW) -> Iterator[Scored]:
        for place, store in enumerate(self.stores):
            for chunk in store.scan(queries, where):
                yield Scored((place << ID_BITS) | chunk.window_ids, chunk.cosines)

    def files(self, where: WindowFilter = EVERY_WINDOW) -> list[StoredRows]:
        return [replace(stored, window_ids=_translated(stored.window_ids, place))
                for place, store in enumerate(self.stores) for stored in store.files(where)]

    def nearest(self, query: np.ndarray, k: int, where: WindowFilter = EVERY_WINDOW,
                approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        best = [store.nearest(query, k, where, approximate) for store in self.stores]
        return top_of([Scored((place << ID_BITS) | ids, scores.reshape(-1, 1))
                       for place, (ids, scores) in enumerate(best)], k)


def _translated(ids: np.ndarray | range, place: int) -> np.ndarray | range:
    """A database's own window ids as ids of the whole (its place in the high bits; a range stays one)."""
    if isinstance(ids, range):
        return range(ids.start + (place << ID_BITS), ids.stop + (place << ID_BITS))  # own ids < 2**ID_BITS: + is |
    return (place << ID_BITS) | ids
