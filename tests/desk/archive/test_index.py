"""The archive's approximate index: built by collect as windows arrive, recall@10 against the exact scan on
clustered embeddings, filters exact, re-indexing adds and rebuilds nothing, files faiss itself reads, an index of
the earlier faiss layout (IVF-SQ8) still searched and then rebuilt by the next index, one of the numpy layout
rebuilt, and the large-archive switch (an HNSW coarse quantiser over many lists) as exact as the default."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from desk.archive import ivf
from desk.archive.ivf import CODEBOOK, INDEX_DIR, LEGACY, MIN_WINDOWS, TRAINED, IvfIndex
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
    assert (archive_root(season["db"]) / INDEX_DIR / CODEBOOK).is_file()
    with open_store(season["db"]) as store:
        assert store.ann() is not None
        assert recall(store, season["queries"]) >= MIN_RECALL


def test_the_index_files_are_faiss_indexes_that_faiss_reads_and_searches(season: dict) -> None:
    import faiss

    folder = archive_root(season["db"]) / INDEX_DIR
    segments = sorted(folder.glob("seg-*.faiss"))
    mapped = [faiss.read_index(str(p)) for p in segments]
    assert sum(int(m.ntotal) for m in mapped) == UNITS * PER_UNIT
    query = season["queries"][0]
    with open_store(season["db"]) as store:
        exact, _ = store.nearest(query, 1)
    best = []
    for index in mapped:
        index.nprobe = 64
        ids = index.search(query.reshape(1, -1), 400)[1][0]
        best.extend(ids[ids >= 0].tolist())
    assert exact[0] in best  # window ids are faiss's ids (its scores are of 4-bit codes: the store re-ranks them)


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
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.faiss")}
    assert len(before) >= 2
    with open_store(season["db"], writable=True) as store:
        assert store.index() == 0
        assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.faiss")} == before
        new = clustered(500, season["rng"], season["centres"], season["bases"])
        assert store.insert(batch(0, new, first=PER_UNIT)) == 500
        assert store.index() == 500
        assert {p: p.stat().st_mtime_ns for p in before} == before  # old segments untouched
        ids, scores = store.nearest(new[7], 1, approximate=True)
        assert scores[0] > 0.999 and ids[0] == store.count() - 500 + 8  # a window just indexed is found by it


def test_an_index_of_the_earlier_numpy_layout_is_rebuilt_on_the_next_index(season: dict, tmp_path) -> None:
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


def sq8_index(folder, store) -> None:
    """An index of the earlier faiss layout (IVF-SQ8: ``trained.faiss`` and segments of 10 000 windows), as the
    last release's collect wrote it."""
    import faiss

    shutil.rmtree(folder)
    folder.mkdir()
    every = store.match()
    trained = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(DIM), DIM, 64, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
    trained.train(store.embeddings(every[::4]))
    faiss.write_index(trained, str(folder / TRAINED))
    for first in range(0, len(every), 10_000):
        ids = every[first : first + 10_000]
        segment = faiss.read_index(str(folder / TRAINED))
        segment.add_with_ids(store.embeddings(ids), ids)
        faiss.write_index(segment, str(folder / f"seg-{ids[0]:012d}-{ids[-1]:012d}.faiss"))


def test_an_index_of_the_earlier_faiss_layout_is_searched_then_rebuilt_by_the_next_index(season: dict,
                                                                                         tmp_path) -> None:
    db = tmp_path / "sq8.duckdb"
    shutil.copy(season["db"], db)
    shutil.copytree(archive_root(season["db"]), archive_root(db))
    folder = archive_root(db) / INDEX_DIR
    with open_store(db) as store:
        sq8_index(folder, store)
    with open_store(db) as store:
        assert store.ann() is not None and store.ann().layout == "sq8"  # type: ignore[union-attr]
        assert recall(store, season["queries"]) >= MIN_RECALL  # still searched, memory-mapped, as it is
    with open_store(db, writable=True) as store:
        assert store.index() == store.count()
        assert not (folder / TRAINED).exists() and IvfIndex(folder).trained
        assert recall(store, season["queries"]) >= MIN_RECALL
    with open_store(db, writable=True) as store:
        assert store.index() == 0  # migrated once


def test_a_large_archive_gets_many_lists_behind_an_hnsw_quantiser_and_the_same_recall(season: dict, tmp_path,
                                                                                     monkeypatch) -> None:
    import faiss

    monkeypatch.setattr(ivf, "LARGE_ABOVE", MIN_WINDOWS // 2)  # the switch, at a size a test can build
    monkeypatch.setattr(ivf, "WINDOWS_PER_LARGE_LIST", 64)
    db = tmp_path / "large.duckdb"
    shutil.copy(season["db"], db)
    shutil.copytree(archive_root(season["db"]), archive_root(db))
    folder = archive_root(db) / INDEX_DIR
    shutil.rmtree(folder)
    with open_store(db, writable=True) as store:
        assert store.index() == store.count()
        trained = faiss.read_index(str(folder / CODEBOOK))
        assert trained.nlist == 1 << int(np.ceil(np.log2(store.count() / 64)))
        assert isinstance(faiss.downcast_index(trained.quantizer), faiss.IndexHNSWFlat)
        assert recall(store, season["queries"]) >= MIN_RECALL
        assert recall(store, season["queries"], WindowFilter(units=("unit-1", "unit-2", "unit-3"))) >= MIN_RECALL


def test_lists_grow_with_the_archive_only_past_the_switch() -> None:
    assert ivf.lists_for(1_000_000, ivf.TRAIN_SAMPLE) == ivf.lists_for(ivf.LARGE_ABOVE, ivf.TRAIN_SAMPLE) == 1024
    assert ivf.lists_for(25_000, 25_000) == 25_000 // ivf.WINDOWS_PER_LIST_TRAINED
    assert ivf.lists_for(200_000_000, ivf.LARGE_SAMPLE) == ivf.MAX_LISTS
    assert ivf.lists_for(40_000_000, ivf.LARGE_SAMPLE) == 16_384


def test_an_index_of_many_segments_is_searched_as_one(season: dict, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ivf, "SEGMENT_WINDOWS", 4_000)
    db = tmp_path / "many.duckdb"
    shutil.copy(season["db"], db)
    shutil.copytree(archive_root(season["db"]), archive_root(db))
    shutil.rmtree(archive_root(db) / INDEX_DIR)
    with open_store(db, writable=True) as store:
        assert store.index() == store.count()
        assert len(store.ann().segments) >= 4  # type: ignore[union-attr]  # merge_from crashed from the third
        assert recall(store, season["queries"]) >= MIN_RECALL
