"""One copy on disk: the archive's Parquet shard is what pyarrow and DuckDB read and what scans memory-map."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from desk.archive.shardfile import LEGACY_SUFFIXES, Shard, write_shard
from desk.archive.store import archive_root
from desk.archive.windows import open_store
from desk.collect.ingest import collect
from edge.batch.analyze import AnalyzeOptions, analyze_paths

DIM = 512
MAX_BYTES_PER_WINDOW = 1.1 * 1024


def unit_rows(count: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)


def test_a_shard_of_many_pages_maps_what_pyarrow_and_duckdb_read(tmp_path: Path) -> None:
    vectors = unit_rows(45_000)  # more rows than one page and one row group hold
    ids = np.arange(7, 7 + len(vectors), dtype=np.int64)
    path = tmp_path / "shard.parquet"
    write_shard(path, ids, vectors)
    assert path.stat().st_size / len(vectors) <= MAX_BYTES_PER_WINDOW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.parquet"]  # no second copy beside it
    shard = Shard(path)
    assert shard.mapped and len(shard.pages) > 1
    assert all(isinstance(m.base, np.ndarray) and not m.flags.owndata for _, m in shard.pages)
    mapped = np.concatenate([m for _, m in shard.pages])
    np.testing.assert_array_equal(mapped, vectors)
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == pa.list_(pa.field("element", pa.float16(), False), DIM)
    np.testing.assert_array_equal(table["window_id"].to_numpy(), ids)
    picked = [0, 20_001, 44_999]
    from_duckdb = duckdb.sql(f"SELECT window_id, embedding FROM '{path}' WHERE window_id IN "
                             f"({', '.join(str(ids[i]) for i in picked)}) ORDER BY window_id").fetchall()
    assert [row[0] for row in from_duckdb] == [int(ids[i]) for i in picked]
    np.testing.assert_array_equal(np.array([row[1] for row in from_duckdb], np.float32),
                                  vectors[picked].astype(np.float32))
    rows = np.array([44_999, 3, 20_000, 19_999])
    np.testing.assert_array_equal(shard.gather(rows), vectors[rows])
    pieces = list(shard.pieces(slice(19_990, 20_010)))
    assert len(pieces) == 2 and np.array_equal(np.concatenate([m for _, m in pieces]), vectors[19_990:20_010])


def legacy_shard(path: Path, keep_copy: bool) -> None:
    """Rewrite a shard as the earlier layout wrote it: version-1 pages, plus a raw float16 copy beside it."""
    table = pq.read_table(path)
    vectors = np.asarray(table["embedding"].combine_chunks().values.to_numpy()).reshape(table.num_rows, -1)
    flat = pa.array(vectors.reshape(-1), type=pa.float16())
    pq.write_table(pa.table({"window_id": table["window_id"],
                             "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])}),
                   path, compression="none", use_dictionary=False, write_statistics=False)
    if keep_copy:
        np.save(path.with_suffix(LEGACY_SUFFIXES[0]), vectors)
        np.save(path.with_suffix(LEGACY_SUFFIXES[1]), np.packbits(vectors > 0, axis=1))


@pytest.mark.parametrize("keep_copy", [True, False])
def test_collect_migrates_an_archive_of_the_earlier_layout(tmp_path: Path, example_bundle: Path,
                                                           example_labels: tuple[Path, Path], toad_in_night: Path,
                                                           keep_copy: bool) -> None:
    analyze_paths([toad_in_night.resolve()], example_labels[0], example_bundle, tmp_path / "analyze",
                  AnalyzeOptions(embeddings_dir=tmp_path / "recordings"))
    db = tmp_path / "season.duckdb"
    collect([tmp_path / "recordings"], db)
    with open_store(db) as store:
        ids = store.match()
        before = store.embeddings(ids)
    (shard,) = archive_root(db).rglob("*.parquet")
    legacy_shard(shard, keep_copy)
    assert not Shard(shard).mapped
    with open_store(db) as store:  # read-only: the old layout is still read, and left as it is
        np.testing.assert_array_equal(store.embeddings(ids), before)
    assert shard.with_suffix(LEGACY_SUFFIXES[0]).exists() == keep_copy
    again = collect([tmp_path / "recordings"], db)
    assert again.added.get("windows", 0) == 0
    assert sorted(p.name for p in shard.parent.iterdir()) == [shard.name]
    assert Shard(shard).mapped
    with open_store(db) as store:
        np.testing.assert_array_equal(store.embeddings(ids), before)
