"""Which on-disk format for the archive's embeddings: bytes per window and the time to get a ``(N, D)`` float16
matrix a scan can multiply, for each candidate, in one run (best of 3, page cache warm).

    python benchmarks/archive_formats.py --windows 200000

Candidates: Parquet ``FixedSizeList<float16>`` decoded by pyarrow (the earlier archive of record), the same
column in version-2 pages mapped in place (``desk.archive.shardfile``, the current one), Parquet
``fixed_size_binary`` (one opaque value a row), an Arrow IPC file memory-mapped, and a raw ``.npy`` (the earlier
scan copy: the baseline). Also which of them DuckDB reads without an extension.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 512


def best_of(run: Callable[[], np.ndarray], tries: int = 3) -> float:
    """Seconds of the fastest of ``tries`` runs, each touching every value (a scan reads them all)."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        np.asarray(run()).view(np.uint16).sum(dtype=np.uint64)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=200_000)
    count = parser.parse_args().windows
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="archive-formats-") as folder:  # removed however the run ends
        measure(Path(folder), count)


def measure(folder: Path, count: int) -> None:
    """Write ``count`` windows in each format into ``folder``, read them back, print sizes and times."""
    import duckdb
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from desk.archive.shardfile import Shard, write_shard

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    ids = np.arange(count, dtype=np.int64)
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float16()), DIM)
    fsb = pa.FixedSizeBinaryArray.from_buffers(pa.binary(DIM * 2), count, [None, pa.py_buffer(vectors.tobytes())])
    plain = {"compression": "none", "use_dictionary": False, "write_statistics": False}
    paths = {"parquet_fsl_v1_decoded": folder / "v1.parquet", "parquet_fsl_v2_mapped": folder / "v2.parquet",
             "parquet_fixed_binary": folder / "fsb.parquet", "arrow_ipc_mapped": folder / "x.arrow",
             "raw_npy_mapped": folder / "x.npy"}
    pq.write_table(pa.table({"window_id": ids, "embedding": fsl}), paths["parquet_fsl_v1_decoded"], **plain)
    started = time.perf_counter()
    write_shard(paths["parquet_fsl_v2_mapped"], ids, vectors)
    write_v2 = time.perf_counter() - started
    pq.write_table(pa.table({"window_id": ids, "embedding": fsb}), paths["parquet_fixed_binary"], **plain)
    with ipc.new_file(paths["arrow_ipc_mapped"], pa.schema([("window_id", pa.int64()), ("embedding", fsl.type)])) \
            as writer:
        writer.write_table(pa.table({"window_id": ids, "embedding": fsl}))
    np.save(paths["raw_npy_mapped"], vectors)

    def v1() -> np.ndarray:
        column = pq.read_table(paths["parquet_fsl_v1_decoded"], columns=["embedding"])["embedding"].combine_chunks()
        return column.values.to_numpy().reshape(-1, DIM)

    def v2() -> np.ndarray:
        return np.concatenate([m for _, m in Shard(paths["parquet_fsl_v2_mapped"]).pages])

    def binary() -> np.ndarray:
        column = pq.read_table(paths["parquet_fixed_binary"], columns=["embedding"])["embedding"].combine_chunks()
        return np.frombuffer(column.buffers()[1], np.float16).reshape(-1, DIM)

    def arrow() -> np.ndarray:
        batch = ipc.open_file(pa.memory_map(str(paths["arrow_ipc_mapped"]))).get_batch(0).column(1)
        return np.frombuffer(batch.values.buffers()[1], np.float16).reshape(-1, DIM)

    readers = {"parquet_fsl_v1_decoded": v1, "parquet_fsl_v2_mapped": v2, "parquet_fixed_binary": binary,
               "arrow_ipc_mapped": arrow, "raw_npy_mapped": lambda: np.load(paths["raw_npy_mapped"], mmap_mode="r")}
    report: dict[str, object] = {"windows": count, "write_v2_s": write_v2}
    baseline = best_of(readers["raw_npy_mapped"])
    for name, path in paths.items():
        assert np.array_equal(readers[name](), vectors), name
        seconds = best_of(readers[name])
        try:
            rows = duckdb.connect().execute(f"SELECT typeof(embedding) FROM '{path}' LIMIT 1").fetchall()
            duck = str(rows[0][0]) if rows else "empty"
        except duckdb.Error as e:
            duck = f"unreadable ({type(e).__name__})"
        report[name] = {"bytes_per_window": path.stat().st_size / count, "read_s": seconds,
                        "vs_raw_npy": seconds / baseline, "duckdb_type": duck}
        print(name, json.dumps(report[name]), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
