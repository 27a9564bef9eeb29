"""Peak resident memory of a Ray worker in ``logs rescore --engine ray``, against the size of one archive file and
the number of labels.

Two synthetic archives (random 512-d windows, 1 KB each on disk): ``--files`` tiny files (the baseline: a worker's
imports and ONNX Runtime session) and ``--files`` files of ``--windows`` windows. Each is re-scored as a Ray Data
job (a private local instance, or the two-node cluster of ``scripts/local_cluster.sh`` with ``--cluster``) against
label lists of each size in ``--labels``; the job reports the largest peak resident memory (VmHWM) of its workers.
Big files over the baseline is what reading one file costs a worker: bounded by one scan chunk (its scores and
its mapped pages), it stays flat as files grow; a worker that held a whole file's scores would grow with
file × labels. ``--baseline-repo`` runs the same jobs with another checkout's code (e.g. the commit before the
streaming workers) in the same run, for the ratio.

    python benchmarks/ray_worker_memory.py [--workdir /tmp/ray-memory] [--files 2] [--windows 100000]
        [--labels 8,512] [--baseline-repo ../old-checkout] [--cluster]
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

from tests.desk.archive.test_rescore_memory import synthetic_bundle  # noqa: E402
from tests.desk.ray.cluster import SCRIPT, synthetic_archive, worker_peak  # noqa: E402

BASELINE_WINDOWS = 500


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def with_code(env: dict[str, str], repo: Path) -> dict[str, str]:
    """``env`` whose Python (driver and Ray workers started by it) imports biolingual-edge from ``repo``."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ray-memory"))
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--windows", type=int, default=100_000, help="windows per archive file")
    parser.add_argument("--labels", default="8,512", help="label list sizes, comma-separated")
    parser.add_argument("--baseline-repo", type=Path, help="also run the jobs with this checkout's code")
    parser.add_argument("--cluster", action="store_true", help="on the two-node cluster instead of a local instance")
    args = parser.parse_args()
    if args.cluster and args.baseline_repo:
        parser.error("--baseline-repo runs on a private local instance only (a cluster's workers run the code its "
                     "nodes were started with)")
    label_counts = [int(n) for n in args.labels.split(",")]
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    small_db, *_ = synthetic_archive(args.workdir / "small", args.files, BASELINE_WINDOWS, 1)
    large_db, *_ = synthetic_archive(args.workdir / "large", args.files, args.windows, 1)
    bundles = {n: synthetic_bundle(args.workdir / f"labels{n}" / "bundle", n)[:2] for n in label_counts}
    codes = [("this checkout", REPO)] + ([("baseline", args.baseline_repo.resolve())] if args.baseline_repo else [])
    env = dict(os.environ)
    engine: tuple[str, ...] = ()
    cluster_dir = None
    if args.cluster:
        printed = dict(line.split("=", 1) for line in subprocess.run(
            [str(SCRIPT), "start"], capture_output=True, text=True, check=True, env=with_code(env, REPO)
        ).stdout.splitlines())
        cluster_dir = printed["CLUSTER_DIR"]
        env.update({k: printed[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")})
        engine = ("--ray-address", printed["RAY_ADDRESS"])
    where = "two-node cluster (its workers run this checkout)" if args.cluster else "private local Ray instance"
    print(f"cpu: {cpu_model()}; {where}, {args.files} files a job; load average at each row", flush=True)
    print("| code | labels | archive file MB | worker peak, 500-window files (baseline) MB | worker peak, big files "
          "MB | reading a file costs | × the file | load average |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    try:
        for name, repo in codes:
            for labels in label_counts:
                bundle, label_list = bundles[labels]
                out = args.workdir / f"out_{name.replace(' ', '_')}_{labels}"
                base, _, _ = worker_peak(small_db, bundle, label_list, out / "small", with_code(env, repo), *engine)
                peak, _, file_mb = worker_peak(large_db, bundle, label_list, out / "large", with_code(env, repo),
                                               *engine)
                print(f"| {name} | {labels} | {file_mb:.1f} | {base:.0f} | {peak:.0f} | {peak - base:.0f} MB | "
                      f"{(peak - base) / file_mb:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)
    finally:
        if cluster_dir:
            subprocess.run([str(SCRIPT), "stop", cluster_dir], check=True)


if __name__ == "__main__":
    main()
