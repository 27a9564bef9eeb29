"""Season archive at scale: a synthetic season written by the real card writer, collected, re-scored, searched.

    python benchmarks/archive_season.py --windows 1000000 --units 20 --workdir /tmp/archive-bench
    python benchmarks/archive_season.py --windows 100000 --units 10 --workdir /tmp/archive-0.1m   # a 0.1 M pass
    python benchmarks/archive_season.py --workdir DIR --phases collect   # collect DIR/cards again (no write)

Each phase runs in its own process (cold: interpreter start and imports included; the OS page cache is warm
because the files were just written) and reports wall seconds and its peak RSS, also split into its peak
anonymous memory (heap: ``peak_rss_anon_mb``) and its peak of mapped file pages (page cache of memory-mapped
shards and index files, which the kernel may drop: ``peak_rss_file_mb``), sampled from ``/proc/PID/status``.
Without ``write`` among the phases the workdir's cards are kept (``cards`` may be a symlink to another
season's) and a ``collect`` phase starts from an empty database. The baseline measured in the
same run is the naive route: re-running ``analyze`` on the audio (tiny random model here, a lower bound; the
full-size fp32 figure from BENCHMARKS.md is also applied).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.phase_runner import report_phase, run_phase, scale_parser  # noqa: E402
from benchmarks.shared_audio import shared_audio  # noqa: E402

RATE = 48_000
WINDOW = 10 * RATE
HOP = 5 * RATE
DIM = 512
WRITE_BATCH = 256
"""Windows per flush while building the synthetic cards (a unit flushes every 4; this only saves time)."""
T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
FULL_SIZE_MS_PER_WINDOW = 84.7
"""Full-size BioLingual fp32 on this machine, 1 thread (BENCHMARKS.md, compare_baseline.py)."""
SEARCH_QUERIES = 5
RESCORE_THRESHOLD = 16.0
"""Score (cosine × 100) that about 1 % of random windows reach for their best of 100 random labels."""


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIM), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


SPECIES = 200
"""Clusters of the synthetic season: one per species heard (not uniform random vectors, which no archive has)."""
SPREAD_DIMS = 6


@functools.cache
def _mixture() -> tuple[np.ndarray, np.ndarray]:
    """The species' centres and directions of variation (the same every call: drawn once, not per batch)."""
    mixture = np.random.default_rng(99)
    centres = unit_vectors(mixture, SPECIES)
    return centres, mixture.standard_normal((SPECIES, SPREAD_DIMS, DIM), dtype=np.float32) / np.sqrt(DIM)


def season_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    """Unit vectors that cluster like a season's: a species' centre, variation along a few directions of its own,
    a little isotropic noise (the same mixture as tests/desk/archive/test_index.py)."""
    centres, bases = _mixture()
    species = rng.integers(0, SPECIES, count)
    spread = np.matmul(rng.standard_normal((count, 1, SPREAD_DIMS), dtype=np.float32), bases[species])[:, 0]
    rows = centres[species] + 0.5 * spread + 0.03 * rng.standard_normal((count, DIM), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_bundle(folder: Path, labels: int) -> tuple[Path, Path]:
    """A bundle with a 512-d label set (the audio model is never run here, only its sha256 matters)."""
    from edge.model.bundle import FrontendParams, LabelSetEntry, Manifest, ModelEntry, TensorSpec, write_manifest
    from edge.scoring.labels import parse_labels

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audio_encoder.fp32.onnx").write_bytes(b"synthetic model for the archive benchmark")
    names = "\n".join(f"species {i:03d}" for i in range(labels))
    label_file = folder.parent / "labels.txt"
    label_file.write_text(names + "\n", encoding="utf-8")
    listed = parse_labels(names)
    (folder / "labels").mkdir(exist_ok=True)
    np.savez(folder / "labels" / f"{listed.key}.npz", embeddings=unit_vectors(np.random.default_rng(1), labels))
    frontend = FrontendParams(RATE, 1024, 480, 64, 50.0, 14_000.0, 10)
    model = ModelEntry("audio_encoder.fp32.onnx", "fp32", "onnxruntime",
                       (TensorSpec("input_features", ("batch", 1, 1001, 64), "float32"),),
                       (TensorSpec("audio_embeds", ("batch", DIM), "float32"),))
    write_manifest(folder, Manifest("synthetic", "0", frontend, DIM, 100.0, models={"fp32": model},
                                    label_sets={listed.key: LabelSetEntry(listed.key, f"labels/{listed.key}.npz",
                                                                          listed.names, "text")}))
    return folder, label_file


def phase_write(work: Path, windows: int, units: int) -> dict[str, float]:
    from edge.card.cardlog import CardLog, UnitIdentity
    from edge.card.embeddings import embedding_spec
    from edge.model.bundle import open_bundle

    spec = embedding_spec(open_bundle(work / "bundle"), "fp32", "fp16")
    rng = np.random.default_rng(0)
    per_unit = windows // units
    for unit in range(units):
        log = CardLog(work / "cards" / f"unit-{unit:02d}", UnitIdentity(f"unit-{unit:02d}", "season"), RATE, {},
                      embeddings=spec, wall_clock=lambda: T0)
        log.open_stream(T0 + timedelta(minutes=unit), 0, "ntp")
        for first in range(0, per_unit, WRITE_BATCH):
            count = min(WRITE_BATCH, per_unit - first)
            starts = [(first + i) * HOP for i in range(count)]
            log.embeddings(starts, [s + WINDOW for s in starts], season_vectors(rng, count))
            log.flush()
        log.close()
    card_bytes = sum(p.stat().st_size for p in (work / "cards").rglob("embeddings/*.emb"))
    return {"card_bytes_per_window": card_bytes / (per_unit * units)}


def phase_collect(work: Path) -> dict[str, float]:
    """Collect the cards; bytes per window are the archive's (all its windows, not only those this run added:
    a re-collect adds none)."""
    from desk.archive.windows import open_store
    from desk.collect.ingest import collect

    result = collect(sorted((work / "cards").iterdir()), work / "season.duckdb")
    with open_store(work / "season.duckdb") as store:
        archived = store.count()
    archive = work / "season.archive"
    windows = max(1, archived)
    shard_bytes = sum(p.stat().st_size for p in archive.rglob("*.parquet"))
    index_bytes = sum(p.stat().st_size for p in (archive / "index").rglob("*") if p.is_file())
    return {"windows_added": result.added.get("windows", 0), "indexed": result.added.get("indexed", 0),
            "windows_archived": archived, "shard_bytes_per_window": shard_bytes / windows,
            "index_bytes_per_window": index_bytes / windows}


def phase_index(work: Path) -> dict[str, float]:
    """Index build alone: the index folder removed and rebuilt from the archive (what collect did at its end)."""
    from desk.archive.windows import open_store

    shutil.rmtree(work / "season.archive" / "index", ignore_errors=True)
    with open_store(work / "season.duckdb", writable=True) as store:
        return {"indexed": store.index()}


def phase_rescore(work: Path, threshold: float | None) -> dict[str, float]:
    from desk.archive.rescore import RescoreOptions, rescore

    result = rescore(work / "season.duckdb", work / "bundle", work / "labels.txt", work / "rescored",
                     RescoreOptions(threshold=threshold))
    return {"windows": result.windows, "rows": result.rows}


def phase_search(work: Path, recall: bool = True) -> dict[str, float]:
    """First query of a fresh process, warm medians (index, exact scan: the baseline), one unit, recall@10."""
    from desk.archive.search import search
    from desk.archive.windows import WindowFilter
    from edge.model.bundle import open_bundle

    bundle = open_bundle(work / "bundle")
    db = work / "season.duckdb"
    rng = np.random.default_rng(7)
    queries = season_vectors(rng, SEARCH_QUERIES * 2 + 2)
    started = time.perf_counter()
    search(db, bundle, queries[0], 10, WindowFilter())
    first = time.perf_counter() - started
    timings: dict[str, list[float]] = {"index": [], "exact": []}
    found: dict[str, list[set[int]]] = {"index": [], "exact": []}
    for query in queries[1 : SEARCH_QUERIES + 1]:
        for kind in ("index", "exact"):
            started = time.perf_counter()
            hits = search(db, bundle, query, 10, WindowFilter(), approximate=kind == "index")
            timings[kind].append(time.perf_counter() - started)
            found[kind].append({h.meta["window_id"] for h in hits})
    from desk.archive.windows import open_store

    with open_store(db) as store:  # the fourth unit, as in earlier runs, or the last of fewer
        units = sorted(unit for (unit,) in store.tally(("unit_id",)))
    started = time.perf_counter()
    search(db, bundle, queries[-1], 10, WindowFilter(units=(units[min(3, len(units) - 1)],)))
    one_unit = time.perf_counter() - started
    with open_store(db) as store:  # the ranking alone, in an open archive (no metadata, no bundle checks)
        for kind in ("index", "exact"):
            ranked = []
            for query in queries[1 : SEARCH_QUERIES + 1]:
                started = time.perf_counter()
                store.nearest(query, 10, approximate=kind == "index")
                ranked.append(time.perf_counter() - started)
            timings[f"{kind}_nearest"] = ranked
    result = {"first_query_s": first, "index_warm_median_s": float(np.median(timings["index"])),
              "exact_warm_median_s": float(np.median(timings["exact"])), "one_unit_s": one_unit,
              "index_nearest_median_s": float(np.median(timings["index_nearest"])),
              "exact_nearest_median_s": float(np.median(timings["exact_nearest"])),
              "recall10_index": float(np.mean([len(a & b) / 10 for a, b in zip(found["index"], found["exact"])]))}
    return {**result, **example_recall(db, bundle, rng)} if recall else result


def example_recall(db: Path, bundle: object, rng: np.random.Generator) -> dict[str, float]:
    """recall@10 of the index against the exact scan for archived windows + noise (search by example)."""
    from desk.archive.search import search
    from desk.archive.windows import WindowFilter, open_store

    with open_store(db) as store:
        examples = store.embeddings(rng.integers(1, store.count(), SEARCH_QUERIES))
    noisy = examples + rng.standard_normal(examples.shape, dtype=np.float32) * 0.02
    recalls = []
    for query in noisy:
        exact = {h.meta["window_id"] for h in search(db, bundle, query, 10, WindowFilter(), approximate=False)}  # type: ignore[arg-type]
        fast = {h.meta["window_id"] for h in search(db, bundle, query, 10, WindowFilter())}  # type: ignore[arg-type]
        recalls.append(len(exact & fast) / 10)
    return {"recall10_index_example": float(np.mean(recalls))}


def phase_naive(work: Path) -> dict[str, float]:
    """``analyze`` on a real 60 s recording with the tiny random model: seconds per window (a lower bound)."""
    from edge.batch.analyze import AnalyzeOptions, analyze_paths
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.synthetic import build_checkpoint

    audio = shared_audio()
    checkpoint = build_checkpoint(work / "tiny-checkpoint", "tiny", seed=0)
    bundle = work / "tiny-bundle"
    export_fp32_bundle(load_checkpoint(str(checkpoint)), bundle, audio)
    labels = work / "tiny-labels.txt"
    labels.write_text("toad\n", encoding="utf-8")
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels
    from export.labels import DEFAULT_TEMPLATE, store_label_set, text_embeddings

    listed = read_labels(labels)
    store_label_set(open_bundle(bundle), listed, text_embeddings(load_checkpoint(str(checkpoint)), listed,
                                                                 (DEFAULT_TEMPLATE,)), "text", (DEFAULT_TEMPLATE,))
    recording = audio / "kitzeslab__opensoundscape" / "1min.wav"
    started = time.perf_counter()
    result = analyze_paths([recording], labels, bundle, work / "naive", AnalyzeOptions(threads=1))
    seconds = time.perf_counter() - started
    windows = max(1, result.detections)
    return {"s_per_window_tiny": seconds / windows, "windows": windows}


PHASES = {"write", "collect", "index", "rescore", "rescore-threshold", "search", "naive"}


def phase_child(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Phase ``name`` in a process of its own: wall seconds, what it printed, its peak anonymous and file RSS."""
    command = [sys.executable, __file__, "--phase", name, "--workdir", str(args.workdir), "--windows",
               str(args.windows), "--units", str(args.units), *(["--no-recall"] if args.no_recall else [])]
    run = run_phase(command, f"phase {name}", REPO)
    return {"wall_s": run.wall_s, **run.result, "peak_rss_anon_mb": run.peak_rss_anon_mb,
            "peak_rss_file_mb": run.peak_rss_file_mb}


def main() -> None:
    parser = scale_parser(__doc__, Path("/tmp/archive-bench"))
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-recall", action="store_true", help="search phase: skip the search-by-example recall runs")
    parser.add_argument("--phases", default="write,collect,index,rescore,rescore-threshold,search,naive",
                        help="comma-separated phases to run, in order")
    args = parser.parse_args()
    work: Path = args.workdir
    if args.phase:
        handlers = {"write": lambda: phase_write(work, args.windows, args.units),
                    "collect": lambda: phase_collect(work), "index": lambda: phase_index(work),
                    "rescore": lambda: phase_rescore(work, None),
                    "rescore-threshold": lambda: phase_rescore(work, RESCORE_THRESHOLD),
                    "search": lambda: phase_search(work, not args.no_recall), "naive": lambda: phase_naive(work)}
        result = handlers[args.phase]()
        report_phase(result)
        return
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    phases = args.phases.split(",")
    if "naive" in phases:
        shared_audio()  # its recording: stop here, in one line, if there are none
    if "write" in phases:
        shutil.rmtree(work, ignore_errors=True)
    elif "collect" in phases:  # a fresh collect of the cards already there
        shutil.rmtree(work / "season.archive", ignore_errors=True)
        for old in ("season.duckdb", "season.duckdb.wal"):
            (work / old).unlink(missing_ok=True)
    if not (work / "bundle").is_dir():
        make_bundle(work / "bundle", args.labels)
    report: dict[str, object] = {"windows": args.windows, "units": args.units, "labels": args.labels,
                                 "machine": machine_line()}
    for name in phases:
        report[name] = {**phase_child(name, args), "load_1min": os.getloadavg()[0]}
        print(name, json.dumps(report[name]), flush=True)
    naive = report.get("naive")
    rescore = report.get("rescore")
    if isinstance(naive, dict) and isinstance(rescore, dict):
        report["ratio"] = naive_ratio(naive, rescore, args.windows)
        print("ratio", json.dumps(report["ratio"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def naive_ratio(naive: dict[str, float], rescore: dict[str, float], windows: int) -> dict[str, float]:
    """Re-running the model over every window (tiny random model measured; full size from BENCHMARKS.md)
    against one rescore from a cold process."""
    naive_tiny_s = naive["s_per_window_tiny"] * windows
    naive_full_s = FULL_SIZE_MS_PER_WINDOW / 1000 * windows
    return {"naive_tiny_s": naive_tiny_s, "naive_full_size_s": naive_full_s,
            "rescore_vs_naive_tiny": naive_tiny_s / rescore["wall_s"],
            "rescore_vs_naive_full_size": naive_full_s / rescore["wall_s"]}


if __name__ == "__main__":
    main()
