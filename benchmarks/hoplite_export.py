"""`logs export --format hoplite` at scale: a synthetic clustered archive exported, then opened and searched by
perch-hoplite (when installed: ``pip install --no-deps perch-hoplite==1.0.2`` plus the test extra).

    python benchmarks/hoplite_export.py --windows 100000,1000000 --units 10 --databases 2 --workdir /tmp/hoplite-bench

Per size (``--windows``, comma-separated), each phase runs in its own process and reports wall and CPU seconds and
peak RSS; the export also its size on disk. ``--databases N`` writes the units into N season databases, read and
exported as one (``--db`` repeated). ``--phases`` picks phases (the ``hnsw`` baseline and the ``search`` phase's
hoplite brute force cost as much as the export again at 1 M; ``expansion``, not run by default, builds usearch's
index at the export's ``expansion_add`` and at hoplite's default 256, with recall@10). Baselines in the same run:
``read`` (every window's metadata and embedding through the WindowStore, what any export must do) and ``hnsw``
(usearch building the same index from vectors already in memory: the part of the export that is hoplite's own
index). ``search``: hoplite's brute-force search and its approximate (HNSW) search against ours (`--exact`), with
recall@10 of hoplite's index on queries drawn from the archive.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from archive_season import RATE, season_vectors  # noqa: E402  (the same clustered mixture)
from phase_runner import run_phase as run_child  # noqa: E402

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
BATCH = 20_000


def peak_rss_mb() -> float:
    """This process's peak resident set, VmHWM (unlike ``ru_maxrss``, not inherited across exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def databases(work: Path) -> list[Path]:
    """The season databases of a run, in the order they are passed as ``--db``."""
    return sorted(work.glob("season-*.duckdb"))


def phase_write(work: Path, windows: int, units: int, count: int) -> dict[str, float]:
    from desk.archive.windows import WindowBatch, open_store

    rng = np.random.default_rng(0)
    per_unit = windows // units
    for unit in range(units):
        with open_store(work / f"season-{unit % count}.duckdb", writable=True) as store:
            for first in range(0, per_unit, BATCH):
                rows = min(BATCH, per_unit - first)
                starts = (first + np.arange(rows, dtype=np.int64)) * 5 * RATE
                utc = int(T0.timestamp() * 1e6) + starts * 1_000_000 // RATE
                store.insert(WindowBatch(
                    segment=f"{first}.emb", unit_id=f"unit-{unit:02d}", deployment_id="season", boot_id="boot-1",
                    sample_rate=RATE, model_sha256="synthetic", source_path=None, card=f"/cards/{unit}",
                    stream=np.zeros(rows, np.int32), start_sample=starts, end_sample=starts + 10 * RATE,
                    start_utc_us=utc, clock_sync=["ntp"] * rows,
                    vectors=season_vectors(rng, rows).astype(np.float16), embedding_space="synthetic"))
    with open_store(databases(work)) as every:
        return {"windows": every.count(), "databases": len(databases(work))}


def phase_read(work: Path) -> dict[str, float]:
    """Baseline: every window's export columns and embedding read through the store, chunk by chunk."""
    from desk.archive.windows import open_store
    from desk.report.hoplite import CHUNK, COLUMNS

    with open_store(databases(work)) as store:
        ids = store.match()
        for first in range(0, len(ids), CHUNK):
            store.windows(ids[first:first + CHUNK], COLUMNS).to_pylist()
            store.embeddings(ids[first:first + CHUNK])
    return {"windows": len(ids)}


def phase_hnsw(work: Path) -> dict[str, float]:
    """Baseline: usearch building the export's index (hoplite's settings) from vectors already in memory."""
    from usearch.index import Index, MetricKind, ScalarKind

    from desk.archive.windows import open_store
    from desk.report.hoplite import EXPANSION_ADD, EXPANSION_SEARCH

    with open_store(databases(work)) as store:
        ids = store.match()
        vectors = store.embeddings(ids).astype(np.float16)
    start, cpu = time.perf_counter(), time.process_time()
    index = Index(ndim=vectors.shape[1], metric=MetricKind.IP, dtype=ScalarKind.F16, expansion_add=EXPANSION_ADD,
                  expansion_search=EXPANSION_SEARCH)
    index.add(ids.astype(np.uint64), vectors)
    return {"build_s": time.perf_counter() - start, "build_cpu_s": time.process_time() - cpu}


def phase_expansion(work: Path) -> dict[str, float]:
    """usearch's build at the export's ``expansion_add`` and at larger ones (hoplite's default is 256): CPU seconds
    and recall@10 against exact search on 50 archived windows as queries."""
    from usearch.index import Index, MetricKind, ScalarKind

    from desk.archive.windows import open_store
    from desk.report.hoplite import EXPANSION_ADD, EXPANSION_SEARCH

    with open_store(databases(work)) as store:
        ids = store.match()
        vectors = store.embeddings(ids).astype(np.float16)
    picked = np.random.default_rng(7).choice(len(ids), 50, replace=False)
    queries = vectors[picked].astype(np.float32)
    exact = np.argsort(-(queries @ vectors.astype(np.float32).T), axis=1, kind="stable")[:, :10]
    found: dict[str, float] = {}
    for expansion in sorted({EXPANSION_ADD, 128, 256}):
        cpu = time.process_time()
        index = Index(ndim=vectors.shape[1], metric=MetricKind.IP, dtype=ScalarKind.F16, expansion_add=expansion,
                      expansion_search=EXPANSION_SEARCH)
        index.add(np.arange(len(ids), dtype=np.uint64), vectors)
        found[f"build_cpu_s_{expansion}"] = time.process_time() - cpu
        hits = index.search(queries.astype(np.float16), 10).keys
        found[f"recall_at_10_{expansion}"] = float(np.mean([len(set(h.tolist()) & set(e.tolist())) / 10
                                                             for h, e in zip(hits, exact)]))
    return found


def phase_export(work: Path) -> dict[str, float]:
    from desk.report.hoplite import export_hoplite

    shutil.rmtree(work / "perch", ignore_errors=True)
    done = export_hoplite(databases(work), work / "perch", [])
    sizes = {p.name: p.stat().st_size for p in (work / "perch").iterdir()}
    return {"windows": done.windows, "output_mb": sum(sizes.values()) / 1e6,
            "bytes_per_window": sum(sizes.values()) / done.windows,
            **{f"{name}_bytes_per_window": size / done.windows for name, size in sizes.items()}}


def phase_search(work: Path, queries: int) -> dict[str, float]:
    """hoplite's searches on the export against ours on the archive (exact), on archived windows as queries."""
    from ml_collections import config_dict
    from perch_hoplite.db import brutalism, db_loader, score_functions

    from desk.archive.windows import open_store

    hoplite = db_loader.DBConfig("sqlite_usearch", config_dict.ConfigDict(
        {"db_path": str(work / "perch"), "readonly": True})).load_db()
    dot = score_functions.get_score_fn("dot")
    timings: dict[str, list[float]] = {"ours_exact_s": [], "hoplite_brute_s": [], "hoplite_hnsw_s": []}
    recall, same_brute = [], []
    with open_store(databases(work)) as store:
        ids = store.match()
        for query in store.embeddings(np.random.default_rng(7).choice(ids, queries, replace=False)):
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
          "search": phase_search, "expansion": phase_expansion}
DEFAULT_PHASES = "write,read,hnsw,export,search"


def run_phase(command: list[str], name: str) -> dict[str, float]:
    """One phase in its own process: its JSON line, with its ``RssAnon`` and ``RssFile`` peaks sampled from outside
    (peaks of separate samples: their sum may exceed the peak RSS, VmHWM, that the phase reports itself)."""
    done = run_child(command, name, REPO)
    return {**done.result, "peak_rss_anon_mb": done.peak_rss_anon_mb, "peak_rss_file_mb": done.peak_rss_file_mb}


def run_size(args: argparse.Namespace, windows: int, phases: list[str]) -> dict[str, dict[str, float]]:
    """Every phase of one archive size, each in a fresh process."""
    work = args.workdir / f"{windows}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = {}
    for phase in phases:
        results[phase] = run_phase([sys.executable, __file__, "--phase", phase, "--windows", str(windows), "--units",
                                    str(args.units), "--databases", str(args.databases), "--queries",
                                    str(args.queries), "--workdir", str(work)], f"{phase} at {windows} windows")
        print(f"{windows} {phase} {results[phase]} load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    export = results.get("export")
    if export:
        ratios = {"export_windows_per_s": export["windows"] / export["seconds"]}
        if "read" in results:
            ratios["export_over_read"] = export["seconds"] / results["read"]["seconds"]
        if "hnsw" in results:
            ratios["export_over_hnsw_build"] = export["seconds"] / results["hnsw"]["build_s"]
        results["ratios"] = ratios
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="100000", help="archive sizes, comma-separated")
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--databases", type=int, default=1, help="season databases the units are spread over")
    parser.add_argument("--phases", default=DEFAULT_PHASES, help="comma-separated, of " + ",".join(PHASES))
    parser.add_argument("--queries", type=int, default=20, help="queries of the search phase")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hoplite-bench"))
    parser.add_argument("--keep", action="store_true", help="keep each size's archive and export")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        start, cpu = time.perf_counter(), time.process_time()
        if args.phase == "write":
            extra = phase_write(args.workdir, int(args.windows), args.units, args.databases)
        elif args.phase == "search":
            extra = phase_search(args.workdir, args.queries)
        else:
            extra = PHASES[args.phase](args.workdir)
        print(json.dumps({"seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                          "peak_rss_mb": peak_rss_mb(), **extra}))
        return
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    phases = [p for p in PHASES if p in args.phases.split(",")]
    if "write" not in phases:
        sys.exit("--phases needs write (each size's archive is written afresh)")
    if "search" in phases:
        try:
            import perch_hoplite  # noqa: F401
        except ImportError:
            print("search: perch-hoplite not installed, skipped", file=sys.stderr)
            phases.remove("search")
    results = {size: run_size(args, int(size), phases) for size in args.windows.split(",")}
    print(json.dumps(results, indent=1))
    print("| windows | export s (CPU s) | peak RSS MB (anon / file) | output MB (B/window) | read s (CPU s) | "
          "brute top-10 = ours | HNSW recall@10 | query ours / brute / HNSW |")
    print("|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for size, result in results.items():
        export, read, search = result.get("export", {}), result.get("read", {}), result.get("search", {})
        print(f"| {int(size):,} | {export.get('seconds', nan):.1f} ({export.get('cpu_s', nan):.1f}) | "
              f"{export.get('peak_rss_mb', nan):.0f} ({export.get('peak_rss_anon_mb', nan):.0f} / "
              f"{export.get('peak_rss_file_mb', nan):.0f}) | {export.get('output_mb', nan):.1f} "
              f"({export.get('bytes_per_window', nan):.0f}) | {read.get('seconds', nan):.1f} "
              f"({read.get('cpu_s', nan):.1f}) | {search.get('brute_top10_overlap', nan):.2f} | "
              f"{search.get('hnsw_recall_at_10', nan):.3f} | {search.get('ours_exact_s', nan):.2f} s / "
              f"{search.get('hoplite_brute_s', nan):.2f} s / {1000 * search.get('hoplite_hnsw_s', nan):.1f} ms |")


if __name__ == "__main__":
    main()
