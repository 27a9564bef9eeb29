"""Indexing an archive (what ``logs collect`` does after ingesting) holds memory and files that do not grow with
the archive: an archive four times larger, in four times as many shards, maps no more of its file pages while
the training sample is gathered and keeps no more files open once indexed.

At 10 M windows (600 shards, ~55 sample rows in each) the training sample's gather mapped ~1.9 GB of shard pages
(each row read faults in ~64 KB around it) and indexing left every shard's map and file open; the same shape
at a test's size: fewer rows per shard than a shard's pages are kept for, every window sampled.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

import desk.archive.ivf as ivf
import desk.archive.shardfile as shardfile
import desk.archive.store as store_module
from desk.archive.windows import WindowBatch, open_store

RATE = 48_000
DIM = 1024
"""2 KB a window: a shard of 50 windows is 100 KB, so mapping every shard shows plainly in RssFile."""
PER_SHARD = 50
SHARDS = 40
T0 = int(datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp() * 1e6)
MB = 1 << 20
GATHER = shardfile.Shard.gather


def resident_file_bytes() -> int:
    """Mapped file pages of this process (``RssFile``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def open_files() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def shard_batch(shard: int, rng: np.random.Generator) -> WindowBatch:
    """One segment of ``PER_SHARD`` windows within one day: one shard."""
    starts = (shard * PER_SHARD + np.arange(PER_SHARD, dtype=np.int64)) * 5 * RATE
    vectors = rng.standard_normal((PER_SHARD, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return WindowBatch(f"seg-{shard}.emb", "unit-1", "season", "boot-1", RATE, "space", None, "/card",
                       np.zeros(PER_SHARD, np.int32), starts, starts + 10 * RATE,
                       T0 + starts * 1_000_000 // RATE, ["ntp"] * PER_SHARD, vectors.astype(np.float16))


def index_cost(folder: Path, shards: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(most file pages mapped while the sample is gathered, files left open) by indexing ``shards`` shards."""
    rng = np.random.default_rng(shards)
    mapped: list[int] = [0]

    def measured_gather(shard: shardfile.Shard, rows: np.ndarray) -> np.ndarray:
        found = GATHER(shard, rows)
        mapped.append(resident_file_bytes())
        return found

    monkeypatch.setattr(shardfile.Shard, "gather", measured_gather)
    with open_store(folder / "season.duckdb", writable=True) as store:
        for shard in range(shards):
            store.insert(shard_batch(shard, rng))
        before, files = resident_file_bytes(), open_files()
        assert store.index() == shards * PER_SHARD
        return max(mapped) - before, open_files() - files


def test_indexing_an_archive_4x_larger_maps_and_opens_no_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MIN_WINDOWS", 1)  # every window is in the sample (< TRAIN_SAMPLE)
    ivf.faiss_module()  # its library's pages are mapped before the first measurement
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small = index_cost(tmp_path / "small", SHARDS, monkeypatch)
    large = index_cost(tmp_path / "large", 4 * SHARDS, monkeypatch)
    # the earlier code: the whole large archive mapped (16 MB) and one file left open per shard
    assert large[0] - small[0] < 4 * MB, (small, large)
    assert large[1] - small[1] < 8, (small, large)
