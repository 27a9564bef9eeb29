"""Exact search ranked by dot products within each shard's recorded norm bounds (desk.archive.bounded): the same
hits as a float64 brute force and as a full cosine scan, whatever the rows' norms; norms computed only for the rows
that can still enter the top; bounds readable by pyarrow and DuckDB; shards without bounds scanned the old way
until ``logs collect`` records them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from desk.archive import bounded
from desk.archive.half_matmul import cosines, square_norms
from desk.archive.shardfile import NORMS_KEY, ROWS_PER_GROUP, Shard
from desk.archive.store import archive_root
from desk.archive.windows import WindowBatch, WindowFilter, open_store, top_of
from desk.collect.ingest import collect
from edge.batch.analyze import AnalyzeOptions, analyze_paths

DIM = 512
RATE = 48_000
DAY = datetime(2024, 5, 1, tzinfo=timezone.utc)
K = 10
TIE = 1e-6
"""Float64 cosines closer than this may come out in either order from float32 arithmetic."""


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def windows(vectors: np.ndarray, segment: str, first: int) -> WindowBatch:
    """One shard's worth of windows of unit ``marsh-01`` (one segment, one day)."""
    count = len(vectors)
    starts = first + np.arange(count, dtype=np.int64) * 5 * RATE
    return WindowBatch(segment=segment, unit_id="marsh-01", deployment_id="marsh", boot_id="boot-1",
                       sample_rate=RATE, model_sha256="space-a", source_path=None, card="/cards/marsh-01",
                       stream=np.zeros(count, np.int32), start_sample=starts, end_sample=starts + 10 * RATE,
                       start_utc_us=int(DAY.timestamp() * 1e6) + starts * 1_000_000 // RATE,
                       clock_sync=["ntp"] * count, vectors=np.asarray(vectors, np.float16))


def archive(path: Path, shards: list[np.ndarray]) -> np.ndarray:
    """A database whose archive holds each array as one shard; returns every row (float16) in window-id order."""
    first = 0
    with open_store(path, writable=True) as store:
        for number, vectors in enumerate(shards):
            assert store.insert(windows(vectors, f"seg{number}.emb", first)) == len(vectors)
            first += len(vectors) * 5 * RATE
    return np.concatenate(shards).astype(np.float16)


def brute_force(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Float64 cosines of float16 ``rows`` (a zero row: 0)."""
    full = rows.astype(np.float64)
    norms = np.linalg.norm(full, axis=1)
    return np.divide(full @ query.astype(np.float64), norms, out=np.zeros(len(rows)), where=norms > 0)


def assert_exact(ids: np.ndarray, scores: np.ndarray, reference: np.ndarray) -> None:
    """``ids`` (1-based rows) are the reference's top ``K`` in its order, but for near-ties; scores agree."""
    order = np.lexsort((np.arange(len(reference)), -reference))[:K]
    kth = reference[order[-1]]
    np.testing.assert_allclose(scores, reference[ids - 1], atol=TIE)
    assert np.all(reference[ids - 1] >= kth - TIE)  # nothing below the true cut (but for a near-tie)
    clear = order[reference[order] > kth + TIE]
    assert set(clear + 1) <= set(ids)  # everything clearly inside the true top is found
    assert np.all(np.diff(reference[ids - 1]) <= TIE)


@pytest.fixture
def normed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the rows each search gives a norm (held rows and rows of shards without bounds)."""
    counted: list[int] = []

    def norms(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        counted.append(len(rows))
        return square_norms(rows, queries)

    def full(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        counted.append(len(rows))
        return cosines(rows, queries)

    monkeypatch.setattr(bounded, "square_norms", norms)
    monkeypatch.setattr(bounded, "cosines", full)
    yield counted


def wild_season(rng: np.random.Generator) -> list[np.ndarray]:
    """Three shards of clustered unit rows, and between them one of norms 0.5-2 with a zero row."""
    centres = unit(rng.standard_normal((8, DIM)))
    def clustered(count: int) -> np.ndarray:
        return unit(centres[rng.integers(0, 8, count)] + 0.6 * unit(rng.standard_normal((count, DIM))))
    wild = clustered(3_000) * rng.uniform(0.5, 2.0, (3_000, 1))
    wild[1234] = 0
    return [clustered(2_500), wild, clustered(4_100), clustered(1_700)]


@pytest.mark.parametrize("hold", [bounded.HOLD_ROWS, 50])
def test_rows_of_any_norm_give_the_float64_top_and_the_full_scans_bits(tmp_path: Path, normed: list[int],
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       hold: int) -> None:
    """Also with held rows given their norms 50 at a time (as a shard of many near-ties makes them, bounding
    memory)."""
    monkeypatch.setattr(bounded, "HOLD_ROWS", hold)
    rng = np.random.default_rng(11)
    rows = archive(tmp_path / "season.duckdb", wild_season(rng))
    wild = slice(2_500, 5_500)
    queries = [unit(rows[7].astype(np.float64)), unit(rows[wild][17].astype(np.float64)),
               unit(rng.standard_normal(DIM)), -unit(rows[9_000].astype(np.float64))]
    with open_store(tmp_path / "season.duckdb") as store:
        for query in queries:
            q = query.astype(np.float32)
            normed.clear()
            ids, scores = store.nearest(q, K)
            assert sum(normed) < len(rows) // 10  # norms only for the rows that could still enter the top
            assert_exact(ids, scores, brute_force(rows, query))
            full_ids, full_scores = top_of(store.scan(q.reshape(-1, 1)), K)  # every row's cosine, as before
            np.testing.assert_array_equal(ids, full_ids)
            np.testing.assert_array_equal(scores, full_scores)  # bit for bit: the same products and norms
        within = WindowFilter(since=DAY + timedelta(seconds=5 * 4_000), until=DAY + timedelta(seconds=5 * 9_000))
        for query in queries:  # a time range (windows 4 000-8 999: half the wild shard) still applies exactly
            ids, scores = store.nearest(query.astype(np.float32), K, within)
            reference = np.full(len(rows), -2.0)
            reference[4_000:9_000] = brute_force(rows[4_000:9_000], query)
            assert_exact(ids, scores, reference)
            full_ids, full_scores = top_of(store.scan(query.astype(np.float32).reshape(-1, 1), within), K)
            assert np.array_equal(ids, full_ids) and np.array_equal(scores, full_scores)


def test_negative_cosines_and_a_zero_row_are_ranked_exactly(tmp_path: Path) -> None:
    """Every window points away from the query: the top holds negative cosines (the bounds swap), the zero row
    (cosine 0) comes first."""
    rng = np.random.default_rng(12)
    query = unit(rng.standard_normal(DIM))
    away = unit(-query + 0.9 * unit(rng.standard_normal((6_000, DIM))))
    away[rng.permutation(6_000)[:3_000]] *= rng.uniform(0.5, 2.0, (3_000, 1))
    away[4_321] = 0
    rows = archive(tmp_path / "away.duckdb", [away[:3_500], away[3_500:]])
    reference = brute_force(rows, query)
    assert reference.max() == 0 and np.sort(reference)[-K] < 0
    with open_store(tmp_path / "away.duckdb") as store:
        ids, scores = store.nearest(query.astype(np.float32), K)
    assert ids[0] == 4_322 and scores[0] == 0
    assert_exact(ids, scores, reference)


def test_fewer_windows_than_asked_all_come_back_zero_rows_included(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    rows = archive(tmp_path / "few.duckdb", [np.zeros((3, DIM)), unit(rng.standard_normal((4, DIM)))])
    query = unit(rng.standard_normal(DIM))
    with open_store(tmp_path / "few.duckdb") as store:
        ids, scores = store.nearest(query.astype(np.float32), K)
    assert sorted(ids) == list(range(1, 8))
    np.testing.assert_allclose(scores, brute_force(rows, query)[ids - 1], atol=TIE)


def test_a_row_just_under_the_bound_edge_enters_the_top(tmp_path: Path) -> None:
    """The shard's smallest norm is the 10th best window's, so its upper bound is its cosine; its largest norm is
    the 11th's, whose lower bound (its cosine, a few millionths lower) lifts the floor to just under that upper
    bound. Swapped (the 11th a few millionths above: the 10th's upper bound just under the floor, within the
    rounding slack), the 10th place changes hands."""
    rng = np.random.default_rng(13)
    query = unit(rng.standard_normal(DIM))
    noise = unit(rng.standard_normal((10_000, DIM)))
    noise -= np.outer(noise @ query, query)

    def at(cosine: np.ndarray) -> np.ndarray:
        """Float16 rows of about unit norm at these cosines to the query, in random directions."""
        rows = cosine[:, None] * query + np.sqrt(1 - cosine[:, None] ** 2) * unit(noise[: len(cosine)])
        return rows.astype(np.float16)

    top = at(np.full(9, 0.9)) * np.float16(1.75)  # the 9 best: lower bounds well above the edge
    edge = at(np.array([0.6])) * np.float16(0.5)  # the smallest norm (scaling by powers of 2 is exact)
    edge_cosine = brute_force(edge, query)[0]
    near = at(edge_cosine + rng.uniform(-3e-4, 3e-4, len(noise))) * np.float16(2)  # the largest norm
    offsets = brute_force(near, query) - edge_cosine
    filler = unit(rng.standard_normal((5_000, DIM))) * rng.uniform(0.55, 1.9, (5_000, 1))
    for sign, place in ((-1, 10), (1, 11)):
        twin = near[np.argmin(np.abs(offsets - sign * 8e-6))]
        assert 5e-6 < sign * (brute_force(twin[None], query)[0] - edge_cosine) < 1.1e-5
        shard = np.concatenate([filler[:2_000], top, edge, twin[None], filler[2_000:]])
        db = tmp_path / f"edge{place}.duckdb"
        rows = archive(db, [shard])
        with open_store(db) as store:
            ids, scores = store.nearest(query.astype(np.float32), K)
        assert_exact(ids, scores, brute_force(rows, query))
        assert (2_010 in ids) == (place == 10) and (2_011 in ids) == (place == 11)  # the edge row, the twin


def test_bounds_are_read_by_pyarrow_and_duckdb(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    shards = wild_season(rng)
    archive(tmp_path / "season.duckdb", shards)
    files = sorted(archive_root(tmp_path / "season.duckdb").rglob("*.parquet"),
                   key=lambda path: int(path.stem.split("_")[-1]))  # named <segment>_<first window id>
    assert len(files) == len(shards)
    for path, vectors in zip(files, shards):
        norms = np.linalg.norm(np.asarray(vectors, np.float16).astype(np.float64), axis=1)
        norms = norms[norms > 0]
        recorded = json.loads(pq.read_metadata(path).metadata[NORMS_KEY.encode()])
        assert recorded["min"] <= norms.min() <= recorded["min"] * (1 + 1e-11)
        assert recorded["max"] * (1 - 1e-11) <= norms.max() <= recorded["max"]
        found = duckdb.sql(f"SELECT decode(value) FROM parquet_kv_metadata('{path}') "
                           f"WHERE decode(key) = '{NORMS_KEY}'").fetchall()
        assert json.loads(found[0][0]) == recorded
        assert Shard(path).norms == (recorded["min"], recorded["max"])


def strip_bounds(path: Path) -> None:
    """Rewrite a shard as collect wrote it before norm bounds were recorded: the same layout, no key."""
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata(None), path, compression="none", use_dictionary=False,
                   write_statistics=False, data_page_version="2.0", row_group_size=ROWS_PER_GROUP,
                   data_page_size=1 << 30)


def test_a_shard_without_bounds_is_scanned_whole_until_collect_records_them(
        tmp_path: Path, example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path,
        normed: list[int]) -> None:
    analyze_paths([toad_in_night.resolve()], example_labels[0], example_bundle, tmp_path / "analyze",
                  AnalyzeOptions(embeddings_dir=tmp_path / "recordings"))
    db = tmp_path / "season.duckdb"
    collect([tmp_path / "recordings"], db)
    (shard,) = archive_root(db).rglob("*.parquet")
    with open_store(db) as store:
        ids = store.match()
        query = store.embeddings(ids[[len(ids) // 3]])[0]
        bounded_hits = store.nearest(query, K)
    assert 0 < sum(normed) < len(ids)
    strip_bounds(shard)
    assert Shard(shard).mapped and Shard(shard).norms is None
    normed.clear()
    with open_store(db) as store:  # read-only: searched the old way, every row's cosine, and left as it is
        old_way = store.nearest(query, K)
    assert normed == [len(ids)]
    for got, want in zip(old_way, bounded_hits):
        np.testing.assert_array_equal(got, want)
    assert Shard(shard).norms is None
    again = collect([tmp_path / "recordings"], db)  # the documented migration: records the bounds, adds nothing
    assert again.added.get("windows", 0) == 0
    assert Shard(shard).norms is not None
    written = shard.stat()
    collect([tmp_path / "recordings"], db)  # and a re-collect rewrites nothing
    assert (shard.stat().st_ino, shard.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    normed.clear()
    with open_store(db) as store:
        for got, want in zip(store.nearest(query, K), bounded_hits):
            np.testing.assert_array_equal(got, want)
    assert 0 < sum(normed) < len(ids)
