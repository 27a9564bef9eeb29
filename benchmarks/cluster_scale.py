"""Per-node throughput on a real two-node Ray cluster (scripts/local_cluster.sh), and a season projection.

Measured in one run, on this machine:

* re-analysis: ``analyze --precision int8`` of one long recording (full-size random checkpoint, built once by
  benchmarks/precision_cpu.py's ``prepare``) with the local pool (``--workers 2``) and as a job on the cluster
  (``--engine ray --ray-address``, one task per node at a time); outputs compared byte for byte;
* rescore: a synthetic archive (archive_season.py's card writer + collect) re-scored against 100 labels here
  (``--engine local``) and as a Ray Data job over its files on the cluster; outputs compared byte for byte;
* the archive's and the audio's bytes per window (what a node reads from shared storage).

The projection divides a network season (the issue's ≈200 M archived windows and 24 000 h of audio) by N nodes
at this machine's single-node rate, and sets beside it the time to read the data once through one shared
storage link (``--storage-gbps``, an assumption printed with the table). Both cluster nodes share this machine's
cores, so the cluster runs measure correctness and Ray's fixed cost per job, not a second node's speed.

    python benchmarks/cluster_scale.py [--workdir /tmp/cluster-bench] [--minutes 5] [--windows 200000]
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

SCRIPT = REPO / "scripts" / "local_cluster.sh"
HOP_S = 5.0
SEASON_UNITS, SEASON_DAYS = 100, 120
SEASON_WINDOWS = 200e6
"""The issue's network season: 100 units × 120 days at a 5 s hop ≈ 2.07e8 archived windows (rescore)."""
SEASON_AUDIO_H = 24_000.0
"""... and the matching audio to re-analyse (the issue's figure; 100 units × 2 h a day × 120 days)."""
AUDIO_BYTES_PER_S = 48_000 * 2
"""16-bit mono at 48 kHz, as the units record (FLAC would halve it)."""
PROJECTED_NODES = (1, 8, 64)


def cluster_start() -> dict[str, str]:
    out = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.suffix in (".csv", ".txt"))
    return names == sorted(p.name for p in b.iterdir() if p.suffix in (".csv", ".txt")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def bench_analyze(work: Path, audio: Path, minutes: float, env: dict[str, str], address: str) -> dict[str, Any]:
    from analyze_scale import bench_inputs

    bundle, labels, recording = bench_inputs(work, audio, minutes)
    windows = int((minutes * 60 - 10.0) // HOP_S) + 1
    base = [sys.executable, "-m", "edge", "analyze", str(recording), "--labels", str(labels), "--bundle",
            str(bundle), "--precision", "int8", "--force-precision", "--piece-seconds", "60"]
    results: dict[str, Any] = {"windows": windows, "audio_s": minutes * 60}
    for name, flags in (("pool", ["--workers", "2"]),
                        ("cluster", ["--workers", "2", "--engine", "ray", "--ray-address", address])):
        out = work / f"analyze-{name}"
        shutil.rmtree(out, ignore_errors=True)
        results[f"{name}_s"] = timed([*base, "--out", str(out), *flags], env)
        print(f"analyze {name}: {results[f'{name}_s']:.1f} s for {windows} windows", flush=True)
    results["identical"] = same_tree(work / "analyze-pool", work / "analyze-cluster")
    return results


def bench_rescore(work: Path, windows: int, env: dict[str, str], address: str) -> dict[str, Any]:
    from archive_season import make_bundle, phase_collect, phase_write

    from desk.archive.store import archive_root

    archive = work / "archive"
    if not (archive / "season.duckdb").exists():
        shutil.rmtree(archive, ignore_errors=True)
        archive.mkdir(parents=True)
        make_bundle(archive / "bundle", 100)
        phase_write(archive, windows, 20)
        phase_collect(archive)
    shards = list(archive_root(archive / "season.duckdb").rglob("*.parquet"))
    base = [sys.executable, "-m", "edge", "logs", "rescore", "--db", str(archive / "season.duckdb"), "--bundle",
            str(archive / "bundle"), "--labels", str(archive / "labels.txt"), "--threshold", "16"]
    results: dict[str, Any] = {"windows": windows, "files": len(shards),
                               "archive_bytes_per_window": sum(p.stat().st_size for p in shards) / windows}
    for name, flags in (("local", []), ("cluster", ["--engine", "ray", "--ray-address", address])):
        out = work / f"rescore-{name}"
        shutil.rmtree(out, ignore_errors=True)
        results[f"{name}_s"] = timed([*base, "--out", str(out), *flags], env)
        print(f"rescore {name}: {results[f'{name}_s']:.1f} s for {windows} windows", flush=True)
    results["identical"] = same_tree(work / "rescore-local", work / "rescore-cluster")
    return results


def season(analyze: dict[str, Any], rescore: dict[str, Any], storage_gbps: float) -> list[dict[str, Any]]:
    """Hours for the season on N nodes of this machine's size: compute at the measured single-node rate (the pool
    for analyze, one process for rescore; both cluster nodes share this machine's cores, so the cluster run
    measures Ray's fixed cost per job, not a second node's speed), beside the hours to read the data once through
    one shared storage link."""
    analyze_rate = analyze["windows"] / analyze["pool_s"]  # windows/s on one node
    rescore_rate = rescore["windows"] / rescore["local_s"]
    audio_windows = SEASON_AUDIO_H * 3600 / HOP_S
    audio_bytes = SEASON_AUDIO_H * 3600 * AUDIO_BYTES_PER_S
    archive_bytes = SEASON_WINDOWS * rescore["archive_bytes_per_window"]
    link = storage_gbps * 1e9 / 8
    rows = []
    for nodes in PROJECTED_NODES:
        rows.append({"nodes": nodes,
                     "analyze_cpu_h": audio_windows / (analyze_rate * nodes) / 3600,
                     "analyze_read_h": audio_bytes / link / 3600,
                     "rescore_cpu_h": SEASON_WINDOWS / (rescore_rate * nodes) / 3600,
                     "rescore_read_h": archive_bytes / link / 3600,
                     "ray_fixed_s": max(analyze["cluster_s"] - analyze["pool_s"], rescore["cluster_s"]
                                        - rescore["local_s"], 0.0)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cluster-bench"))
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--storage-gbps", type=float, default=10.0,
                        help="one shared storage link every node reads through (an assumption)")
    parser.add_argument("--skip-analyze", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.skip_analyze:
        args.audio = args.audio or shared_audio()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"{cpu}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    cluster = cluster_start()
    env = {**os.environ, "PYTHONPATH": str(REPO), **{k: cluster[k] for k in
           ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}}
    try:
        rescore = bench_rescore(args.workdir, args.windows, env, cluster["RAY_ADDRESS"])
        analyze = None if args.skip_analyze else bench_analyze(args.workdir, args.audio, args.minutes, env,
                                                               cluster["RAY_ADDRESS"])
    finally:
        subprocess.run([str(SCRIPT), "stop", cluster["CLUSTER_DIR"]], check=True)
    report: dict[str, Any] = {"cpu": cpu, "rescore": rescore, "analyze": analyze}
    if analyze is not None:
        report["season"] = season(analyze, rescore, args.storage_gbps)
        print(f"season ({SEASON_WINDOWS:.3g} archived windows, {SEASON_AUDIO_H:g} h audio; storage link "
              f"{args.storage_gbps:g} Gb/s), hours:")
        for row in report["season"]:
            print("  " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    print(json.dumps({k: v for k, v in report.items() if k != "season"}, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
