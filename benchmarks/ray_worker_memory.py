"""Peak resident memory of a Ray worker in ``logs rescore --engine ray``, against the size of one archive file.

Three synthetic archives (random 512-d windows, 1 KB each on disk): ``--files`` tiny files (the baseline: a
worker's imports and ONNX Runtime session), ``--files`` files of ``--windows`` windows, and four times as many
such files. Each is re-scored as a Ray Data job (a private local instance, or the two-node cluster of
``scripts/local_cluster.sh`` with ``--cluster``); the job reports the largest peak resident memory (VmHWM) of
its workers. Big files over the baseline is what reading one file costs a worker; four times the files over
the same number is what it keeps of the files it read before (nothing, if it holds one shard at a time).

    python benchmarks/ray_worker_memory.py [--workdir /tmp/ray-memory] [--files 6] [--windows 100000] [--cluster]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.desk.ray.cluster import SCRIPT, synthetic_archive, worker_peak  # noqa: E402

LABELS = 8
BASELINE_WINDOWS = 500


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ray-memory"))
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--windows", type=int, default=100_000, help="windows per archive file")
    parser.add_argument("--cluster", action="store_true", help="on the two-node cluster instead of a local instance")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    small = synthetic_archive(args.workdir / "small", args.files, BASELINE_WINDOWS, LABELS)
    large = synthetic_archive(args.workdir / "large", args.files, args.windows, LABELS)
    many = synthetic_archive(args.workdir / "many", 4 * args.files, args.windows, LABELS)
    engine: tuple[str, ...] = ()
    cluster_dir = None
    if args.cluster:
        printed = dict(line.split("=", 1) for line in subprocess.run(
            [str(SCRIPT), "start"], capture_output=True, text=True, check=True, env=env).stdout.splitlines())
        cluster_dir = printed["CLUSTER_DIR"]
        env.update({k: printed[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")})
        engine = ("--ray-address", printed["RAY_ADDRESS"])
    try:
        base, _, small_mb = worker_peak(*small, args.workdir / "small_out", env, *engine)
        peak, workers, file_mb = worker_peak(*large, args.workdir / "large_out", env, *engine)
        more, _, _ = worker_peak(*many, args.workdir / "many_out", env, *engine)
    finally:
        if cluster_dir:
            subprocess.run([str(SCRIPT), "stop", cluster_dir], check=True)
    print(f"cpu: {cpu_model()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{'two-node cluster' if args.cluster else 'private local Ray instance'}, {workers} workers")
    print("| archive | files | largest file MB | busiest worker's peak RSS MB |")
    print("|---|---|---|---|")
    print(f"| {BASELINE_WINDOWS} windows a file (baseline) | {args.files} | {small_mb:.1f} | {base:.0f} |")
    print(f"| {args.windows} windows a file | {args.files} | {file_mb:.1f} | {peak:.0f} |")
    print(f"| {args.windows} windows a file | {4 * args.files} | {file_mb:.1f} | {more:.0f} |")
    print(f"reading a file costs a worker {peak - base:.0f} MB ({(peak - base) / file_mb:.2f} × the file); "
          f"4× the files add {more - peak:+.0f} MB ({(more - peak) / file_mb:+.2f} × a file; archives of "
          f"{args.files * file_mb:.0f} and {4 * args.files * file_mb:.0f} MB)")


if __name__ == "__main__":
    main()
