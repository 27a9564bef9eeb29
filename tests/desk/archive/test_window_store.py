"""The archive's one door (desk.archive.windows.WindowStore): its contract, on embeddings of a real recording."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from desk.archive.windows import Scored, WindowBatch, WindowFilter, normalised, open_store, top_of
from desk.collect.database import CollectError
from desk.collect.ingest import collect
from edge.batch.analyze import AnalyzeOptions, analyze_paths

RATE = 48_000
DAY_ONE = datetime(2024, 5, 1, 21, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path, example_labels: tuple[Path, Path],
         toad_in_night: Path) -> dict[str, object]:
    """A collected archive of one real recording (through ``logs collect``), and its embeddings as float16."""
    root = tmp_path_factory.mktemp("store")
    analyze_paths([toad_in_night.resolve()], example_labels[0], example_bundle, root / "analyze",
                  AnalyzeOptions(embeddings_dir=root / "recordings"))
    db = root / "season.duckdb"
    collect([root / "recordings"], db)
    with open_store(db) as store:
        ids = store.match()
        vectors = store.embeddings(ids).astype(np.float16)
        space = next(iter(store.spaces()))
    return {"db": db, "ids": ids, "vectors": vectors, "space": space}


def batch(vectors: np.ndarray, unit: str, start: datetime, space: str, segment: str, first: int = 0) -> WindowBatch:
    """Windows of 10 s every 5 s from sample ``first`` on, the first starting at ``start``."""
    count = len(vectors)
    starts = first + np.arange(count, dtype=np.int64) * 5 * RATE
    utc = int(start.timestamp() * 1e6) + (starts - first) * 1_000_000 // RATE
    return WindowBatch(segment=segment, unit_id=unit, deployment_id="marsh", boot_id="boot-1", sample_rate=RATE,
                       model_sha256=space, source_path=None, card=f"/cards/{unit}", stream=np.zeros(count, np.int32),
                       start_sample=starts, end_sample=starts + 10 * RATE, start_utc_us=utc,
                       clock_sync=["ntp"] * count, vectors=vectors)


def test_inserted_windows_match_by_unit_and_time_and_give_back_their_embeddings(real: dict, tmp_path: Path) -> None:
    vectors, space = real["vectors"], real["space"]
    half = len(vectors) // 2
    with open_store(tmp_path / "two.duckdb", writable=True) as store:
        assert store.count() == 0
        assert store.insert(batch(vectors[:half], "marsh-01", DAY_ONE, space, "a.emb")) == half
        day_two = DAY_ONE + timedelta(days=1)
        assert store.insert(batch(vectors[half:], "marsh-02", day_two, space, "b.emb")) == len(vectors) - half
        # the same segment again, and an overlapping one: only windows not archived yet are added
        assert store.insert(batch(vectors[half:], "marsh-02", day_two, space, "b.emb")) == 0
        overlap = batch(vectors[-3:], "marsh-02", day_two + timedelta(seconds=5 * (len(vectors) - half - 1)), space,
                        "c.emb", first=5 * RATE * (len(vectors) - half - 1))
        assert store.insert(overlap) == 2
        assert store.count() == len(vectors) + 2

        second = store.match(WindowFilter(units=("marsh-02",)))
        assert len(second) == len(vectors) - half + 2
        np.testing.assert_array_equal(store.embeddings(second[: len(vectors) - half]),
                                      normalised(vectors[half:]))
        evening = store.match(WindowFilter(since=DAY_ONE + timedelta(seconds=10), until=DAY_ONE + timedelta(hours=1)))
        rows = store.windows(evening, ("unit_id", "start_sample", "start_utc", "recording", "samples")).to_pylist()
        assert {r["unit_id"] for r in rows} == {"marsh-01"} and len(rows) == half - 2
        assert rows[0]["start_utc"] == (DAY_ONE + timedelta(seconds=10)).replace(tzinfo=None)
        assert rows[0]["recording"] == "marsh-01/boot-1/stream0" and rows[0]["samples"] == 10 * RATE
        assert store.tally(("unit_id",)) == {("marsh-01",): half, ("marsh-02",): len(vectors) - half + 2}
        assert store.count(WindowFilter(spaces=("another model",))) == 0
        assert store.count(WindowFilter(units=())) == 0


def test_scan_and_nearest_equal_brute_force_cosines(real: dict) -> None:
    rng = np.random.default_rng(5)
    with open_store(real["db"]) as store:
        ids = store.match()
        queries = normalised(rng.standard_normal((3, real["vectors"].shape[1])).astype(np.float32)).T
        chunks = list(store.scan(queries))
        scanned_ids = np.concatenate([c.window_ids for c in chunks])
        scanned = np.concatenate([c.cosines for c in chunks])
        brute = store.embeddings(ids) @ queries
        np.testing.assert_array_equal(scanned_ids, ids)
        np.testing.assert_allclose(scanned, brute, atol=1e-5)
        query = normalised(real["vectors"][8:9])[0]  # the toad's window at 40 s: its own nearest
        near_ids, near_scores = store.nearest(query, 3)
        exact = store.embeddings(ids) @ query
        np.testing.assert_allclose(near_scores, np.sort(exact)[::-1][:3], atol=1e-5)
        np.testing.assert_allclose(exact[np.searchsorted(ids, near_ids)], near_scores, atol=1e-5)
        assert near_ids[0] == ids[8] and near_scores[0] == pytest.approx(1.0, abs=1e-3)
        assert list(store.scan(queries, WindowFilter(units=("nobody",)))) == []
        forward = store.windows(ids, ("window_id", "start", "recording")).to_pylist()
        assert [r["window_id"] for r in forward] == ids.tolist() and forward[8]["start"] == 40 * RATE
        assert store.windows(ids[::-1], ("window_id", "start", "recording")).to_pylist() == forward[::-1]


def test_unknown_window_ids_are_a_one_line_error(real: dict) -> None:
    with open_store(real["db"]) as store, pytest.raises(CollectError) as error:
        store.embeddings([int(real["ids"][0]), 10_000_000])
    assert "1 of 2 window ids" in str(error.value) and error.value.hint
    last = int(real["ids"][-1])
    with open_store(real["db"]) as store, pytest.raises(CollectError, match="1 of 2 window ids"):
        store.windows(np.arange(last, last + 2))


def test_top_of_breaks_ties_by_id_however_the_windows_are_chunked() -> None:
    """Equal cosines (copies of one recording) at the cut: the smallest ids win whatever the chunks, so a cluster's
    per-file best, merged, is the local scan's answer (the old cut kept whichever ties argpartition met)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 200))
        ids = rng.permutation(10_000)[:n].astype(np.int64)
        scores = rng.integers(0, 5, n).astype(np.float32)  # many ties
        k = int(rng.integers(1, 30))
        expected = np.lexsort((ids, -scores))[:k]
        cuts = [0, *sorted(rng.integers(0, n, 3)), n]
        chunks = [Scored(ids[a:b], scores[a:b, None]) for a, b in zip(cuts, cuts[1:])]
        got_ids, got_scores = top_of(chunks, k)
        assert got_ids.tolist() == ids[expected].tolist() and got_scores.tolist() == scores[expected].tolist()
