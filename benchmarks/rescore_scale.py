"""``logs rescore`` at scale: 1 M / 10 M archived windows × 100 labels, new code against a baseline commit.

    python benchmarks/rescore_scale.py --windows 1000000 --baseline e845ee6 --workdir /tmp/rescore-bench

The archive is written through the store's own ``insert`` (one shard per unit and UTC day, 17 280 windows, as
``collect`` writes a season's cards); its metadata and the bundle are built once. Each rescore runs in a fresh
process (cold: interpreter start and imports included; the OS page cache is warm because the shards were just
written or read), for this working tree and for ``--baseline`` (a git revision, extracted to a temp folder and
put first on ``PYTHONPATH``), alternating, ``--repeat`` times each. Reported per side: median wall seconds, the
child's ``ru_maxrss``, rows written, and the load average before and after; ``ratio`` = baseline / new; the two
``detections.csv`` are compared byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.phase_runner import report_phase, run_phase, scale_parser  # noqa: E402  (this tree's, always)

CODE_VARIABLE = "RESCORE_SCALE_CODE"
"""The tree a rescore child imports the project from (this one, or the baseline's)."""
sys.path.insert(0, os.environ.get(CODE_VARIABLE, str(REPO)))

RATE = 48_000
HOP = 5 * RATE
WINDOW = 10 * RATE
DIM = 512
PER_DAY = 86_400 * RATE // HOP
"""Windows a unit records in one UTC day at a 5 s hop: one shard each."""
T0_US = 1_714_521_600_000_000
"""2024-05-01 00:00 UTC."""
THRESHOLD = 16.0
"""Score (cosine × 100) that about 1 % of the synthetic windows reach for their best of 100 random labels."""


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIM), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build(work: Path, windows: int, units: int, labels: int) -> None:
    """The bundle (``labels`` random label vectors), its label file and an archive of ``windows`` windows."""
    sys.path.insert(0, str(REPO / "tests" / "desk" / "archive"))
    from test_rescore_memory import synthetic_bundle

    from desk.archive.windows import WindowBatch, open_store

    _, _, space = synthetic_bundle(work / "bundle", labels)
    rng = np.random.default_rng(0)
    centres = unit_vectors(np.random.default_rng(99), 200)
    per_unit = windows // units
    with open_store(work / "season.duckdb", writable=True) as store:
        for unit in range(units):
            for first in range(0, per_unit, PER_DAY):
                count = min(PER_DAY, per_unit - first)
                starts = (first + np.arange(count, dtype=np.int64)) * HOP
                rows = centres[rng.integers(0, len(centres), count)] + 0.6 * unit_vectors(rng, count)
                rows /= np.linalg.norm(rows, axis=1, keepdims=True)
                store.insert(WindowBatch(f"day{first // PER_DAY:03d}.emb", f"unit-{unit:03d}", "season", "boot-1",
                                         RATE, space, None, f"/cards/unit-{unit:03d}", np.zeros(count, np.int32),
                                         starts, starts + WINDOW, T0_US + starts * 1_000_000 // RATE,
                                         ["ntp"] * count, rows.astype(np.float16)))


def phase_rescore(work: Path, out: Path, threshold: float | None, profile: Path | None) -> dict[str, float]:
    from desk.archive.rescore import RescoreOptions, rescore

    def go() -> object:
        return rescore(work / "season.duckdb", work / "bundle", work / "labels.txt", out,
                       RescoreOptions(threshold=threshold))

    if profile is None:
        result = go()
    else:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(go)
        profiler.dump_stats(str(profile))
    return {"windows": result.windows, "rows": result.rows}  # type: ignore[attr-defined]


def run_rescore(code: Path, work: Path, out: Path, threshold: float | None) -> dict[str, float]:
    """One rescore in a fresh process whose imports come from ``code``; wall seconds and its peak RSS."""
    command = [sys.executable, str(REPO / "benchmarks" / "rescore_scale.py"), "--phase", "rescore",
               "--workdir", str(work), "--out", str(out), *([] if threshold is None else ["--threshold",
                                                                                          str(threshold)])]
    env = {**os.environ, "PYTHONPATH": str(code), CODE_VARIABLE: str(code)}
    run = run_phase(command, f"rescore ({code})", code, env)
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mb": run.result["peak_rss_mb"],
            "rows": run.result["rows"]}


def extract(revision: str, folder: Path) -> Path:
    """The tree of ``revision`` of this repository, unpacked into ``folder``."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def same_tables(one: Path, other: Path) -> bool:
    """Both folders hold the same files with the same bytes."""
    names = sorted(p.name for p in one.iterdir())
    return names == sorted(p.name for p in other.iterdir()) and all(
        filecmp.cmp(one / name, other / name, shallow=False) for name in names)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = scale_parser(__doc__, Path("/tmp/rescore-bench"))
    parser.add_argument("--baseline", help="git revision to compare against (omit: this tree only)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threshold", type=float, help="rescore --threshold (default: top-1 of every window)")
    parser.add_argument("--reuse", action="store_true", help="keep an archive already built in --workdir")
    parser.add_argument("--keep", action="store_true", help="leave --workdir behind (default: removed at the end)")
    parser.add_argument("--phase", choices=("rescore",), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="--phase rescore: write cProfile stats here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work: Path = args.workdir
    if args.phase:
        import desk

        assert Path(desk.__file__).parents[1] == Path(os.environ.get(CODE_VARIABLE, REPO)), desk.__file__
        result = phase_rescore(work, args.out, args.threshold, args.profile)
        report_phase(result)
        return
    temp = Path(tempfile.mkdtemp(prefix="rescore-scale-"))
    try:
        if not (args.reuse and (work / "season.duckdb").is_file()):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            started = time.perf_counter()
            build(work, args.windows, args.units, args.labels)
            print("build", json.dumps({"s": round(time.perf_counter() - started, 1)}), flush=True)
        sides = {"new": REPO, **({"baseline": extract(args.baseline, temp / "baseline")} if args.baseline else {})}
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        report: dict[str, object] = {"windows": args.windows, "labels": args.labels, "threshold": args.threshold,
                                     "baseline": args.baseline, "load_before": loadavg()}
        for _ in range(args.repeat):
            for side, code in sides.items():
                runs[side].append(run_rescore(code, work, temp / f"out-{side}", args.threshold))
                print(side, json.dumps(runs[side][-1]), flush=True)
        report["load_after"] = loadavg()
        for side, done in runs.items():
            report[side] = {"median_wall_s": float(np.median([r["wall_s"] for r in done])),
                            "median_cpu_s": float(np.median([r["cpu_s"] for r in done])),
                            "peak_rss_mb": max(r["peak_rss_mb"] for r in done), "rows": done[0]["rows"]}
        if args.baseline:
            base, new = report["baseline"], report["new"]
            report["ratio_wall"] = base["median_wall_s"] / new["median_wall_s"]  # type: ignore[index]
            report["ratio_cpu"] = base["median_cpu_s"] / new["median_cpu_s"]  # type: ignore[index]
            report["identical_tables"] = same_tables(temp / "out-new", temp / "out-baseline")
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
