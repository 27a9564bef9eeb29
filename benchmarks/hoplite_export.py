"""`logs export --format hoplite` at scale: a synthetic clustered archive exported, then opened and searched by
perch-hoplite (when installed: ``pip install --no-deps perch-hoplite==1.0.2`` plus the test extra).

    python benchmarks/hoplite_export.py --windows 100000 --units 10 --workdir /tmp/hoplite-bench

Each phase runs in its own process and reports wall seconds and peak RSS. Baselines measured in the same run:
``read`` (every window's metadata and embedding through the WindowStore, what any export must do) and ``hnsw``
(usearch building the same index from vectors already in memory: the part of the export that is hoplite's own
index). ``search``: hoplite's brute-force search and its approximate (HNSW) search against ours (`--exact`), with
recall@10 of hoplite's index on queries drawn from the archive.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from archive_season import RATE, season_vectors  # noqa: E402  (the same clustered mixture)

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
BATCH = 20_000
QUERIES = 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_write(work: Path, windows: int, units: int) -> dict[str, float]:
    from desk.archive.windows import WindowBatch, open_store

    rng = np.random.default_rng(0)
    per_unit = windows // units
    with open_store(work / "season.duckdb", writable=True) as store:
        for unit in range(units):
            for first in range(0, per_unit, BATCH):
                count = min(BATCH, per_unit - first)
                starts = (first + np.arange(count, dtype=np.int64)) * 5 * RATE
                utc = int(T0.timestamp() * 1e6) + starts * 1_000_000 // RATE
                store.insert(WindowBatch(
                    segment=f"{first}.emb", unit_id=f"unit-{unit:02d}", deployment_id="season", boot_id="boot-1",
                    sample_rate=RATE, model_sha256="synthetic", source_path=None, card=f"/cards/{unit}",
                    stream=np.zeros(count, np.int32), start_sample=starts, end_sample=starts + 10 * RATE,
                    start_utc_us=utc, clock_sync=["ntp"] * count,
                    vectors=season_vectors(rng, count).astype(np.float16), embedding_space="synthetic"))
        return {"windows": store.count()}


def phase_read(work: Path) -> dict[str, float]:
    """Baseline: every window's export columns and embedding read through the store, chunk by chunk."""
    from desk.archive.windows import open_store
    from desk.report.hoplite import CHUNK, COLUMNS

    with open_store(work / "season.duckdb") as store:
        ids = store.match()
        for first in range(0, len(ids), CHUNK):
            store.windows(ids[first:first + CHUNK], COLUMNS).to_pylist()
            store.embeddings(ids[first:first + CHUNK])
    return {"windows": len(ids)}


def phase_hnsw(work: Path) -> dict[str, float]:
    """Baseline: usearch building the export's index (hoplite's settings) from vectors already in memory."""
    from usearch.index import Index, MetricKind, ScalarKind

    from desk.archive.windows import open_store

    with open_store(work / "season.duckdb") as store:
        ids = store.match()
        vectors = store.embeddings(ids).astype(np.float16)
    start = time.perf_counter()
    index = Index(ndim=vectors.shape[1], metric=MetricKind.IP, dtype=ScalarKind.F16, expansion_add=256,
                  expansion_search=128)
    index.add(ids.astype(np.uint64), vectors)
    return {"build_s": time.perf_counter() - start}


def phase_export(work: Path) -> dict[str, float]:
    from desk.report.hoplite import export_hoplite

    shutil.rmtree(work / "perch", ignore_errors=True)
    done = export_hoplite(work / "season.duckdb", work / "perch", [])
    size = sum(p.stat().st_size for p in (work / "perch").iterdir())
    return {"windows": done.windows, "bytes_per_window": size / done.windows}


def phase_search(work: Path) -> dict[str, float]:
    """hoplite's searches on the export against ours on the archive (exact), on archived windows as queries."""
    from ml_collections import config_dict
    from perch_hoplite.db import brutalism, db_loader, score_functions

    from desk.archive.windows import open_store

    hoplite = db_loader.DBConfig("sqlite_usearch", config_dict.ConfigDict(
        {"db_path": str(work / "perch"), "readonly": True})).load_db()
    dot = score_functions.get_score_fn("dot")
    timings: dict[str, list[float]] = {"ours_exact_s": [], "hoplite_brute_s": [], "hoplite_hnsw_s": []}
    recall, same_brute = [], []
    with open_store(work / "season.duckdb") as store:
        ids = store.match()
        queries = store.embeddings(np.random.default_rng(7).choice(ids, QUERIES, replace=False))
        for query in queries:
            start = time.perf_counter()
            exact, _ = store.nearest(query, 10)
            timings["ours_exact_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            brute = brutalism.brute_search(hoplite, query, 10, dot)
            timings["hoplite_brute_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            hnsw = hoplite.search(query, 10, approximate=True)
            timings["hoplite_hnsw_s"].append(time.perf_counter() - start)
            same_brute.append(len({int(r.window_id) for r in brute} & set(exact.tolist())) / 10)
            recall.append(len({int(r.window_id) for r in hnsw} & set(exact.tolist())) / 10)
    return {**{k: float(np.median(v)) for k, v in timings.items()},
            "brute_top10_overlap": float(np.mean(same_brute)), "hnsw_recall_at_10": float(np.mean(recall))}


PHASES = {"write": phase_write, "read": phase_read, "hnsw": phase_hnsw, "export": phase_export,
          "search": phase_search}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hoplite-bench"))
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        start = time.perf_counter()
        extra = (PHASES[args.phase](args.workdir, args.windows, args.units) if args.phase == "write"
                 else PHASES[args.phase](args.workdir))
        print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), **extra}))
        return
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    results = {}
    for phase in PHASES:
        if phase == "search":
            try:
                import perch_hoplite  # noqa: F401
            except ImportError:
                print("search: perch-hoplite not installed, skipped", file=sys.stderr)
                continue
        done = subprocess.run([sys.executable, __file__, "--phase", phase, "--windows", str(args.windows),
                               "--units", str(args.units), "--workdir", str(args.workdir)],
                              capture_output=True, text=True, check=True)
        results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
        print(phase, results[phase], file=sys.stderr)
    export, read = results["export"], results["read"]
    results["ratios"] = {"export_over_read": export["seconds"] / read["seconds"],
                         "export_over_hnsw_build": export["seconds"] / results["hnsw"]["build_s"],
                         "export_windows_per_s": export["windows"] / export["seconds"]}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
