"""Re-analysis at scale on one 10-minute recording, in one run: workers, reference pipeline, Ray, a projection.

Every ``biolingual-edge analyze`` row is a real subprocess on the same recording and INT8 bundle (full-size
random checkpoint, built once by benchmarks/precision_cpu.py's ``prepare``); its wall time includes start-up.
The work log is watched while it runs, so each row also has the time to the first finished unit.

* ``--workers 2`` vs ``--workers 1`` (both with the default thread split, and ``--workers 1 --threads 1``);
* INT8 end to end vs the reference (ClapFeatureExtractor + torch fp32 get_audio_features, same windows,
  decode and resample included, model load excluded; torch with its default threads = all cores);
* the local pool vs ``--engine ray`` (a private local Ray instance, started and stopped by the run);
* a projection for a season (units × days of continuous audio) on 1, 8 and 64 nodes, from the measured
  per-window cost of the pool: an estimate that assumes linear scaling and no I/O limit.

    python benchmarks/analyze_scale.py [--workdir /tmp/scale-bench] [--minutes 10] [--no-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

RATE = 48_000
WINDOW_S, HOP_S = 10.0, 5.0
POLL_S = 0.01
"""How often the work log is looked at while a run goes (for the time to the first unit)."""
SEASON_UNITS, SEASON_DAYS = 100, 120
SECONDS_PER_DAY = 86_400
PROJECTED_NODES = (1, 8, 64)
PROJECTED_NODE_CORES = (2, 32)
"""This machine's core count, and a typical workstation/cluster node."""


def analyze_run(recording: Path, bundle: Path, labels: Path, out: Path, *flags: str) -> dict[str, Any]:
    """One ``biolingual-edge analyze`` subprocess: wall time and when the first unit reached the work log."""
    from edge.batch.writer import WORKLOG_NAME

    if out.exists():
        shutil.rmtree(out)  # a work log left by an earlier run would read as this run's first unit
    command = [sys.executable, "-m", "edge", "analyze", str(recording), "--labels", str(labels), "--bundle",
               str(bundle), "--out", str(out), "--precision", "int8", "--force-precision", *flags]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_unit = None
    log = out / WORKLOG_NAME
    while process.poll() is None:
        if first_unit is None and log.exists() and log.read_text(encoding="utf-8").count("\n") >= 2:
            first_unit = time.perf_counter() - started
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr[-2000:]}")
    rows = (out / "detections.csv").read_text(encoding="utf-8").count("\n") - 1
    return {"flags": " ".join(flags), "wall_s": wall, "first_unit_s": first_unit or wall, "rows": rows,
            "csv": (out / "detections.csv").read_bytes()}


def bench_inputs(workdir: Path, audio: Path, minutes: float) -> tuple[Path, Path, Path]:
    """(INT8 bundle, its labels, the long recording), built once into ``workdir``."""
    from daemon_fast import ensure_labels, long_recording
    from precision_cpu import prepare

    workdir.mkdir(parents=True, exist_ok=True)
    bundle = prepare(workdir, audio, "full")
    labels = workdir / "daemon-labels.txt"
    ensure_labels(bundle, workdir / "checkpoint", labels)
    recording = workdir / "ten-minutes.wav"
    if not recording.exists():
        long_recording(audio, minutes, recording)
    return bundle, labels, recording


def projection(seconds_per_window_per_core: float, overhead: float) -> list[dict[str, Any]]:
    """Wall-clock days for a season on N nodes of C cores, from the measured per-window core cost."""
    windows = SEASON_UNITS * SEASON_DAYS * SECONDS_PER_DAY / HOP_S
    rows = []
    for cores in PROJECTED_NODE_CORES:
        for nodes in PROJECTED_NODES:
            seconds = windows * seconds_per_window_per_core * (1 + overhead) / (nodes * cores)
            rows.append({"nodes": nodes, "cores_per_node": cores, "windows": windows,
                         "days": seconds / SECONDS_PER_DAY, "realtime_x": SEASON_UNITS * SEASON_DAYS
                         * SECONDS_PER_DAY / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row (Ray not installed)")
    parser.add_argument("--no-reference", action="store_true", help="skip the torch reference")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()

    from compare_baseline import in_child, reference_run

    from edge.batch.pool import available_cores
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)  # the CPU and its INT8 features: the ratios depend on them

    bundle, labels, recording = bench_inputs(args.workdir, args.audio, args.minutes)
    audio_s = args.minutes * 60
    windows = int((audio_s - WINDOW_S) // HOP_S) + 1
    cores = available_cores()
    load = os.getloadavg()
    print(f"{recording}: {args.minutes:g} min, {windows} windows; {cores} cores; load average {load[0]:.1f}",
          flush=True)

    configs = [("workers 1 (threads 2)", ("--workers", "1")), ("workers 1, threads 1", ("--workers", "1",
               "--threads", "1")), ("workers 2 (threads 1 each)", ("--workers", "2"))]
    if not args.no_ray:
        configs.append(("ray, 2 workers (local instance)", ("--workers", "2", "--engine", "ray")))
    runs: dict[str, dict[str, Any]] = {}
    for name, flags in configs:
        runs[name] = analyze_run(recording, bundle, labels, args.workdir / f"out-{len(runs)}", *flags)
        print(f"{name}: {runs[name]['wall_s']:.1f} s (first unit {runs[name]['first_unit_s']:.1f} s)", flush=True)
    csvs = {run["csv"] for run in runs.values()}
    rows: list[dict[str, Any]] = []
    reference_s = None
    if not args.no_reference:
        reference = in_child(reference_run, str(args.workdir / "checkpoint"), [recording], round(WINDOW_S * RATE),
                             round(HOP_S * RATE), 4, None)
        reference_s = reference.total_s
        rows.append({"pipeline": "reference: ClapFeatureExtractor + torch fp32 (loop only, model load excluded)",
                     "wall_s": reference_s, "realtime_x": audio_s / reference_s, "vs_reference": 1.0})
    base = runs["workers 1 (threads 2)"]["wall_s"]
    for name, run in runs.items():
        rows.append({"pipeline": f"analyze int8 {name}", "wall_s": run["wall_s"], "first_unit_s": run["first_unit_s"],
                     "realtime_x": audio_s / run["wall_s"], "vs_workers1": base / run["wall_s"],
                     "vs_reference": reference_s / run["wall_s"] if reference_s else None})
    pool = runs["workers 2 (threads 1 each)"]["wall_s"]
    ray = runs.get("ray, 2 workers (local instance)")
    ray_overhead = (ray["wall_s"] - pool) / pool if ray else None
    per_window_core_s = pool * cores / windows
    print("\n| pipeline | wall s | first unit s | real-time × | × workers 1 | × reference |\n|---|---|---|---|---|---|")
    for row in rows:
        def cell(key: str, fmt: str, row: dict[str, Any] = row) -> str:
            return "—" if row.get(key) is None else format(row[key], fmt)
        print(f"| {row['pipeline']} | {row['wall_s']:.1f} | {cell('first_unit_s', '.1f')} | {row['realtime_x']:.1f} "
              f"| {cell('vs_workers1', '.2f')} | {cell('vs_reference', '.2f')} |")
    print(f"\nidentical detections.csv across engines/workers: {len(csvs) == 1}")
    if ray_overhead is not None:
        print(f"Ray vs local pool: {100 * ray_overhead:+.0f} % wall ({ray['wall_s'] - pool:+.1f} s, mostly starting "
              "and stopping the local Ray instance)")
    print(f"per-window cost (pool, all cores): {1e3 * per_window_core_s:.0f} core-ms")
    season = projection(per_window_core_s, 0.0)  # Ray's start-up is a fixed cost, negligible over a season
    print(f"\nProjection (estimate): {SEASON_UNITS} units × {SEASON_DAYS} days of continuous audio, "
          f"{season[0]['windows']:.3g} windows\n")
    print("| nodes | cores/node | wall-clock days | real-time × |\n|---|---|---|---|")
    for row in season:
        print(f"| {row['nodes']} | {row['cores_per_node']} | {row['days']:.2f} | {row['realtime_x']:.0f} |")
    if args.json:
        for run in runs.values():
            run.pop("csv")
        args.json.write_text(json.dumps({"load_average": load, "cores": cores, "rows": rows, "runs": runs,
                                         "ray_overhead": ray_overhead,
                                         "per_window_core_s": per_window_core_s, "projection": season}, indent=2),
                             encoding="utf-8")


if __name__ == "__main__":
    main()
