"""The archive's index at 10–20 M windows and the large-archive switch, without building an archive.

    python benchmarks/ivf_scale.py --windows 10000000 --workdir /tmp/ivf-scale [--large] [--baseline]

Streams ``--windows`` unit vectors of the season mixture (``benchmarks/archive_season.py``: 200 species clusters,
not uniform random vectors) in chunks, never holding them all: each chunk is appended to the index as collect
appends pages (``desk/archive/ivf.py``, ids from 1) and scored against the queries to keep their exact top 10.
The queries are ``--queries`` season draws and as many archived windows plus noise (search by example). recall@10
is the share of the exact top 10 among the index's 400 candidates (the store re-ranks them exactly, so that is its
recall). Reports training and indexing CPU seconds, the build's peak anonymous RSS, the search's open time and
resident index, per-query wall and CPU ms (p50/p95, candidates only: the archive's re-rank is measured by
``archive_season.py``) at several probes, and bytes a window on disk. ``--large`` builds the large-archive layout
(HNSW coarse quantiser, :func:`desk.archive.ivf.lists_for` lists) whatever the size; ``--baseline`` also builds the
earlier IVF-SQ8 layout (1 024 lists, memory-mapped, stacked) from the same vectors and times both in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ann_candidates import CANDIDATES, CHUNK, K, PeakAnon, _anon_mb, season_chunks  # noqa: E402
from benchmarks.archive_season import DIM, season_vectors  # noqa: E402

SQ8_SEGMENT = 200_000


class Truth:
    """The exact top ``K`` of every window streamed so far, per query."""

    def __init__(self, queries: np.ndarray) -> None:
        self.queries = queries
        self.scores = np.zeros((len(queries), 0), np.float32)
        self.ids = np.zeros((len(queries), 0), np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = np.concatenate([self.scores, self.queries @ vectors.T], axis=1)
        every = np.concatenate([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))], axis=1)
        keep = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        self.scores, self.ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(every, keep, 1)


def queries_for(count: int, windows: int) -> np.ndarray:
    """``count`` season draws, then ``count`` windows of the first chunk plus noise (search by example)."""
    _, first = next(season_chunks(min(windows, CHUNK)))
    noisy = first[:: max(1, len(first) // count)][:count].astype(np.float32)
    noisy += 0.02 * np.random.default_rng(6).standard_normal(noisy.shape, dtype=np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return np.concatenate([season_vectors(np.random.default_rng(5), count), noisy])


def build(ivf: Any, folder: Path, windows: int, queries: np.ndarray, large: bool) -> dict[str, Any]:
    """Train on a sample and append every window; the exact top 10 of the queries on the way."""
    if large:
        ivf.LARGE_ABOVE = 0
    index = ivf.IvfIndex(folder)
    rows = ivf.training_rows(windows if large or windows > ivf.LARGE_ABOVE else 0) or ivf.TRAIN_SAMPLE
    sample = season_vectors(np.random.default_rng(1), min(rows, windows))
    started = time.process_time()
    with PeakAnon() as train_peak:
        index.train(sample, windows)
    train_cpu = time.process_time() - started
    del sample
    truth = Truth(queries)
    indexing = 0.0

    def fed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal indexing
        for ids, rows in season_chunks(windows):
            truth.add(ids, rows.astype(np.float32))
            indexing -= time.process_time()
            yield ids, rows
            indexing += time.process_time()

    with PeakAnon() as add_peak:
        index.append(fed())
    return {"index": index, "truth": truth, "train_cpu_s": train_cpu,
            "train_peak_anon_mb": train_peak.peak - train_peak.base, "index_cpu_s": indexing,
            "index_cpu_us_per_window": 1e6 * indexing / windows, "build_peak_anon_mb": add_peak.peak - add_peak.base}


def build_sq8(folder: Path, windows: int) -> None:
    """The earlier layout (IVF-SQ8, 1 024 lists, segments of 200 000), from the same vectors."""
    import faiss

    folder.mkdir(parents=True)
    trained = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(DIM), DIM, 1024, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
    trained.cp.niter = 8
    trained.train(season_vectors(np.random.default_rng(1), 32_768))
    faiss.write_index(trained, str(folder / "trained.faiss"))
    segment: Any = None
    for ids, rows in season_chunks(windows):
        if segment is None:
            segment, first = faiss.read_index(str(folder / "trained.faiss")), int(ids[0])
        segment.add_with_ids(rows.astype(np.float32), ids)
        if segment.ntotal >= SQ8_SEGMENT or ids[-1] == windows:
            faiss.write_index(segment, str(folder / f"seg-{first:012d}-{int(ids[-1]):012d}.faiss"))
            segment = None


def timed(index: Any, queries: np.ndarray, truth_ids: np.ndarray, probes: int) -> dict[str, float]:
    walls, cpus, found = [], [], []
    for round_ in range(2):
        for query, exact in zip(queries, truth_ids):
            wall, cpu = time.perf_counter(), time.process_time()
            got = index.candidates(query, CANDIDATES, probes)
            if round_:
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                found.append(len(set(got.tolist()) & set(exact.tolist())) / K)
    half = len(found) // 2
    return {"probes": probes, "query_ms_p50": 1e3 * float(np.median(walls)),
            "query_ms_p95": 1e3 * float(np.percentile(walls, 95)), "query_cpu_ms_p50": 1e3 * float(np.median(cpus)),
            "recall10_season": float(np.mean(found[:half])), "recall10_example": float(np.mean(found[half:]))}


def opened(index: Any) -> tuple[float, float]:
    """Seconds to open the searcher (read and join the segments) and the anonymous MB it holds."""
    before, started = _anon_mb(), time.perf_counter()
    index.searcher()
    return time.perf_counter() - started, _anon_mb() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=50, help="season queries (and as many by example)")
    parser.add_argument("--probes", default="8,16,32")
    parser.add_argument("--large", action="store_true", help="the large-archive layout whatever the size")
    parser.add_argument("--baseline", action="store_true", help="also the earlier IVF-SQ8 layout, same vectors")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ivf-scale"))
    parser.add_argument("--keep", action="store_true", help="leave the built indexes in WORKDIR")
    args = parser.parse_args()
    from desk.archive import ivf
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    built = build(ivf, args.workdir / "index", args.windows, queries_for(args.queries, args.windows), args.large)
    index, truth = built.pop("index"), built.pop("truth")
    open_s, resident = opened(index)
    report: dict[str, Any] = {"windows": args.windows, "large": args.large, **built,
                              "lists": int(index.searcher()[0].nlist), "segments": len(index.segments),
                              "bytes_per_window": index.nbytes() / args.windows, "open_s": open_s,
                              "searcher_anon_mb": resident, "load_1min": os.getloadavg()[0]}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}), flush=True)
    sq8 = None
    if args.baseline:
        build_sq8(args.workdir / "sq8", args.windows)
        sq8 = ivf.IvfIndex(args.workdir / "sq8")
        sq8_open, sq8_resident = opened(sq8)
        print(json.dumps({"baseline": "IVF1024,SQ8 segments of 200 000, mmap + stack", "open_s": round(sq8_open, 3),
                          "bytes_per_window": round(sq8.nbytes() / args.windows, 1)}), flush=True)
    for probes in (int(p) for p in args.probes.split(",")):
        row = {"layout": "pq-fastscan", **timed(index, truth.queries, truth.ids, probes),
               "load_1min": os.getloadavg()[0]}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if sq8 is not None:
            base = {"layout": "sq8 (baseline)", **timed(sq8, truth.queries, truth.ids, probes)}
            base["pq_speedup_cpu"] = base["query_cpu_ms_p50"] / max(row["query_cpu_ms_p50"], 1e-6)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in base.items()}), flush=True)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
