"""The archive's approximate index: built by collect as windows arrive, recall@10 against the exact scan on
clustered embeddings, filters exact, re-indexing adds and rebuilds nothing, files faiss itself reads (memory-
mapped), an index of the earlier numpy layout rebuilt."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from desk.archive.ivf import INDEX_DIR, LEGACY, MIN_WINDOWS, TRAINED, IvfIndex
from desk.archive.store import archive_root
from desk.archive.windows import EVERY_WINDOW, WindowBatch, WindowFilter, WindowShapeError, open_store

RATE = 48_000
DIM = 512
SPECIES = 120
"""Clusters in the synthetic season: one per species heard."""
UNITS = 4
PER_UNIT = MIN_WINDOWS // UNITS + 1_000
SPACE = "model-sha"
T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
QUERIES = 20
MIN_RECALL = 0.95


def clustered(count: int, rng: np.random.Generator, centres: np.ndarray, bases: np.ndarray) -> np.ndarray:
    """Unit vectors like a season's embeddings: each a species' centre plus variation in a few directions of its
    own (calls differ in a low-dimensional way) and a little isotropic noise."""
    species = rng.integers(0, len(centres), count)
    spread = np.einsum("nk,nkd->nd", rng.standard_normal((count, bases.shape[1])).astype(np.float32),
                       bases[species])
    rows = centres[species] + 0.5 * spread + 0.03 * rng.standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def batch(unit: int, vectors: np.ndarray, first: int = 0) -> WindowBatch:
    count = len(vectors)
    starts = (first + np.arange(count, dtype=np.int64)) * 5 * RATE
    utc = int(T0.timestamp() * 1e6) + starts * 1_000_000 // RATE
    return WindowBatch(f"u{unit}-{first}.emb", f"unit-{unit}", "season", "boot-1", RATE, SPACE, None, f"/c/{unit}",
                       np.zeros(count, np.int32), starts, starts + 10 * RATE, utc, ["ntp"] * count,
                       vectors.astype(np.float16))


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((SPECIES, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((SPECIES, 6, DIM)).astype(np.float32) / np.sqrt(DIM)
    db = tmp_path_factory.mktemp("index") / "season.duckdb"
    with open_store(db, writable=True) as store:
        for unit in range(UNITS):
            store.insert(batch(unit, clustered(PER_UNIT, rng, centres, bases)))
        indexed = store.index()
    queries = clustered(QUERIES, rng, centres, bases)
    return {"db": db, "indexed": indexed, "queries": queries, "rng": rng, "centres": centres, "bases": bases}


def recall(store: object, queries: np.ndarray, where: WindowFilter = EVERY_WINDOW) -> float:
    found = []
    for query in queries:
        exact, _ = store.nearest(query, 10, where)  # type: ignore[attr-defined]
        fast, scores = store.nearest(query, 10, where, approximate=True)  # type: ignore[attr-defined]
        assert np.all(np.diff(scores) <= 0)
        found.append(len(set(exact.tolist()) & set(fast.tolist())) / 10)
    return float(np.mean(found))


def test_collect_indexes_every_window_and_search_finds_the_exact_top_10(season: dict) -> None:
    assert season["indexed"] == UNITS * PER_UNIT
    assert (archive_root(season["db"]) / INDEX_DIR / TRAINED).is_file()
    with open_store(season["db"]) as store:
        assert store.ann() is not None
        assert recall(store, season["queries"]) >= MIN_RECALL


def test_the_index_files_are_faiss_indexes_that_faiss_maps_and_searches(season: dict) -> None:
    import faiss

    folder = archive_root(season["db"]) / INDEX_DIR
    segments = sorted(folder.glob("seg-*.faiss"))
    mapped = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in segments]
    assert sum(int(m.ntotal) for m in mapped) == UNITS * PER_UNIT
    query = season["queries"][0]
    with open_store(season["db"]) as store:
        exact, _ = store.nearest(query, 1)
    best = []
    for index in mapped:
        index.nprobe = 64
        scores, ids = index.search(query.reshape(1, -1), 1)
        best.append((scores[0][0], ids[0][0]))
    assert max(best)[1] == exact[0]  # window ids are faiss's ids


def test_a_query_of_another_dimension_is_one_line_on_the_indexed_path_too(season: dict) -> None:
    with open_store(season["db"]) as store, pytest.raises(WindowShapeError, match=f"{DIM}-dimensional index"):
        store.nearest(np.ones(DIM + 3, np.float32) / np.sqrt(DIM + 3), 10, approximate=True)


def test_filters_stay_exact_with_the_index(season: dict) -> None:
    with open_store(season["db"]) as store:
        one_unit = WindowFilter(units=("unit-2",))
        most = WindowFilter(since=(T0 + timedelta(hours=1)).replace(tzinfo=None))
        for where in (one_unit, most):
            allowed = set(store.match(where).tolist())
            for query in season["queries"][:5]:
                ids, _ = store.nearest(query, 10, where, approximate=True)
                assert len(ids) == 10 and set(ids.tolist()) <= allowed
            assert recall(store, season["queries"], where) >= MIN_RECALL


def test_indexing_again_adds_only_new_windows_and_rewrites_nothing(season: dict) -> None:
    folder = archive_root(season["db"]) / INDEX_DIR
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")}
    with open_store(season["db"], writable=True) as store:
        assert store.index() == 0
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")} == before
        new = clustered(500, season["rng"], season["centres"], season["bases"])
        assert store.insert(batch(0, new, first=PER_UNIT)) == 500
        assert store.index() == 500
        assert {p: p.stat().st_mtime_ns for p in before} == before  # old segments untouched
        ids, scores = store.nearest(new[7], 1, approximate=True)
        assert scores[0] > 0.999 and ids[0] == store.count() - 500 + 8  # a window just indexed is found by it


def test_an_index_of_the_earlier_numpy_layout_is_rebuilt_on_the_next_index(season: dict, tmp_path) -> None:
    import shutil

    db = tmp_path / "old.duckdb"
    shutil.copy(season["db"], db)
    shutil.copytree(archive_root(season["db"]), archive_root(db))
    folder = archive_root(db) / INDEX_DIR
    for old in folder.glob("*.faiss"):
        old.unlink()
    np.save(folder / LEGACY, np.zeros((4, DIM), np.float32))
    (folder / "seg-000000000001-000000000010").mkdir()
    with open_store(db) as store:
        assert store.ann() is None  # not searched as it is: exact scans until it is rebuilt
        assert len(store.nearest(season["queries"][0], 10, approximate=True)[0]) == 10
    with open_store(db, writable=True) as store:
        assert store.index() == store.count()
        assert not (folder / LEGACY).exists() and IvfIndex(folder).trained
        assert recall(store, season["queries"]) >= MIN_RECALL
