"""The re-rank reads only the rows it asks for: a gather maps nothing of the shard into the process."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

import numpy as np
import pytest

from desk.archive.shardfile import Shard, write_shard
from desk.collect.database import CollectError

DIM = 512
ROW_BYTES = DIM * 2


def unit_rows(count: int) -> np.ndarray:
    rows = np.random.default_rng(3).standard_normal((count, DIM)).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)


def resident_kb(path: Path) -> int:
    """kB of ``path``'s pages mapped into this process (the ``Rss`` of its mappings in ``/proc/self/smaps``)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's first line: address range ... [path]
                inside = fields[-1] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.fixture
def shard(tmp_path: Path) -> tuple[Shard, np.ndarray]:
    vectors = unit_rows(45_000)  # three pages (~20 000 rows each), 46 MB
    path = tmp_path / "shard.parquet"
    write_shard(path, np.arange(1, len(vectors) + 1, dtype=np.int64), vectors)
    return Shard(path), vectors


def test_a_scattered_gather_reads_its_rows_and_maps_nothing_of_the_shard(shard: tuple[Shard, np.ndarray]) -> None:
    opened, vectors = shard
    assert opened.mapped and len(opened.pages) == 3
    rows = np.random.default_rng(0).permutation(np.arange(0, 45_000, 113))  # 399 rows ~113 KB apart, any order
    before = resident_kb(opened.path)
    np.testing.assert_array_equal(opened.gather(rows), vectors[rows])
    # the previous gather copied the rows out of the map: each fault mapped ~64 KB around its row (~25 MB here)
    assert resident_kb(opened.path) == before
    assert opened.bytes_read == len(rows) * ROW_BYTES


def test_runs_across_a_page_boundary_repeats_and_no_rows_come_back_in_the_order_asked(
        shard: tuple[Shard, np.ndarray]) -> None:
    opened, vectors = shard
    boundary = opened.pages[1][0]
    rows = np.array([boundary + 2, boundary - 1, boundary, boundary + 1, 44_999, 0, 1, 0, boundary - 2])
    np.testing.assert_array_equal(opened.gather(rows), vectors[rows])
    assert opened.bytes_read == len(rows) * ROW_BYTES
    assert opened.gather(np.zeros(0, np.int64)).shape == (0, DIM)
    with pytest.raises(IndexError, match="rows outside"):
        opened.gather(np.array([45_000]))


def test_a_shard_cut_short_after_it_was_opened_is_a_one_line_error(shard: tuple[Shard, np.ndarray]) -> None:
    opened, _ = shard
    last = opened.pages[-1]
    with open(opened.path, "r+b") as handle:
        handle.truncate(opened._page_offsets[-1] + 10 * ROW_BYTES)
    with pytest.raises(CollectError, match="ends before row") as caught:
        opened.gather(np.array([last[0] + 100]))
    assert caught.value.hint == "collect the cards again into a fresh database"


def descriptors(path: Path) -> int:
    """How many of this process's open file descriptors are ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def test_a_shard_keeps_its_file_open_between_gathers_until_closed(shard: tuple[Shard, np.ndarray]) -> None:
    opened, vectors = shard
    mapped = descriptors(opened.path)  # the memory map holds one of its own
    for rows in (np.array([5, 40_000]), np.array([7]), np.array([44_999, 0])):
        np.testing.assert_array_equal(opened.gather(rows), vectors[rows])
        assert descriptors(opened.path) == mapped + 1  # the first gather's descriptor, not one per call
    opened.close()
    assert descriptors(opened.path) == mapped
    np.testing.assert_array_equal(opened.gather(np.array([3])), vectors[[3]])  # reopened when read again
    dropped = Shard(opened.path)
    dropped.gather(np.array([1]))
    del dropped
    gc.collect()
    assert descriptors(opened.path) == mapped + 1  # a shard dropped unclosed closes its file (and its map's)
    opened.close()


def test_closing_the_store_closes_its_shards_files(tmp_path: Path) -> None:
    from desk.archive.store import DuckShardStore

    vectors = unit_rows(100)
    store = DuckShardStore(tmp_path / "season.duckdb", writable=True)
    path = store.root / "some.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_shard(path, np.arange(1, 101, dtype=np.int64), vectors)
    shard = store.shard("some.parquet")
    mapped = descriptors(path)
    np.testing.assert_array_equal(shard.gather(np.array([4, 2])), vectors[[4, 2]])
    assert descriptors(path) == mapped + 1
    store.close()
    assert descriptors(path) == mapped  # what is left is the map's, until the shard is collected
