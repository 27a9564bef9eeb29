"""Peak resident memory of each Ray worker in ``logs rescore --engine ray`` and the exact search's Ray job, on the
two-node cluster of ``scripts/local_cluster.sh``, over archives of growing size made of files of one size.

Synthetic archives (random 512-d windows, 1 KB each on disk) of each count in ``--files`` files of ``--windows``
windows, plus a baseline archive of 500-window files (a worker's imports and ONNX Runtime session). Each job runs
on the cluster while this script samples every Ray worker process of the cluster's two nodes every 50 ms:
VmHWM (the peak the kernel kept), and the peaks of RssAnon (the worker's heap), RssFile (mapped files: libraries
and archive pages) and RssShmem (pages of the node's shared object store the worker wrote results into). The job's
own ``ray: worker peak memory …`` line gives the tasks, the files a task read and the largest part a task sent.
Bounded by one file, the busiest worker's peak stays flat as the archive grows; a worker that held what it read
or sent would grow with the files.

    python benchmarks/ray_worker_memory.py [--workdir /tmp/ray-memory] [--files 2,8,32] [--windows 20000]
        [--labels 400] [--jobs rescore,search]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.desk.ray.cluster import (  # noqa: E402  # noqa: E402
    Cluster,
    JobLoad,
    archive_job,
    session_pids,
    started_cluster,
    synthetic_archive,
    wait_for,
)

BASELINE_WINDOWS = 500
FIELDS = ("VmHWM", "RssAnon", "RssFile", "RssShmem")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def ray_workers(cluster: Cluster) -> set[int]:
    """Ray worker processes of both nodes (titled ``ray::…``; not the raylets, GCS or agents)."""
    found = set()
    for pid in session_pids(cluster.head_sid) | session_pids(cluster.node_sid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::") and not title.endswith(b"Agent"):
            found.add(pid)
    return found


def status_kb(pid: int) -> dict[str, int]:
    """The :data:`FIELDS` of ``/proc/PID/status``, kB (empty when the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines if ":" in line) if k in FIELDS}


@dataclass
class Peaks:
    """Per worker pid, the largest value of each field seen."""

    seen: dict[int, dict[str, int]] = field(default_factory=dict)

    def sample(self, pids: set[int]) -> None:
        for pid in pids:
            now = status_kb(pid)
            mine = self.seen.setdefault(pid, dict.fromkeys(FIELDS, 0))
            for name, value in now.items():
                mine[name] = max(mine[name], value)

    def busiest(self) -> dict[str, float]:
        """The largest of each field over the workers, MB."""
        return {name: max((w[name] for w in self.seen.values()), default=0) / 1024 for name in FIELDS}

    def each_hwm(self) -> list[float]:
        return sorted((w["VmHWM"] / 1024 for w in self.seen.values() if w["VmHWM"]), reverse=True)


@contextmanager
def sampling(cluster: Cluster, before: set[int], every_s: float = 0.05) -> Iterator[Peaks]:
    """The cluster's workers sampled until the block ends, once the workers of the job ``before`` are gone (Ray ends
    them after their driver; those that stay are not counted)."""
    with suppress(AssertionError):
        wait_for(lambda: not ray_workers(cluster) & before, "the last job's workers to exit", 60)
    peaks = Peaks()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            peaks.sample(ray_workers(cluster) - before)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


def row(job: str, files: int, file_mb: float, load: JobLoad, peaks: Peaks, base: float) -> str:
    top = peaks.busiest()
    each = ", ".join(f"{v:.0f}" for v in peaks.each_hwm())
    return (f"| {job} | {files} | {files * file_mb:.0f} | {load.tasks} | {load.files_a_task} | {load.part_mb:.2f} | "
            f"{each} | {top['VmHWM']:.0f} | {top['VmHWM'] - base:.0f} | {(top['VmHWM'] - base) / file_mb:.2f} | "
            f"{top['RssAnon']:.0f} | {top['RssFile']:.0f} | {top['RssShmem']:.0f} | {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ray-memory"))
    parser.add_argument("--files", default="2,8,32", help="archive sizes in files, comma-separated")
    parser.add_argument("--windows", type=int, default=20_000, help="windows per archive file")
    parser.add_argument("--labels", type=int, default=400, help="labels of the rescore")
    parser.add_argument("--jobs", default="rescore,search")
    parser.add_argument("--object-store-mb", type=int, default=100, help="each node's object store")
    args = parser.parse_args()
    sizes = [int(n) for n in args.files.split(",")]
    jobs = args.jobs.split(",")
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    archives = {0: synthetic_archive(args.workdir / "baseline", 2, BASELINE_WINDOWS, args.labels)}
    for files in sizes:
        archives[files] = synthetic_archive(args.workdir / f"files{files}", files, args.windows, args.labels)
    print(f"cpu: {cpu_model()}; two-node cluster (scripts/local_cluster.sh, 1 CPU and a {args.object_store_mb} MB "
          f"object store a node); {args.windows} windows a file, {args.labels} labels; load average at each row",
          flush=True)
    print("| job | files | archive MB | tasks | files a task | largest part MB | each worker's peak (VmHWM) MB | "
          "busiest MB | over baseline MB | × a file | peak RssAnon MB | peak RssFile MB | peak RssShmem MB | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    before: set[int] = set()
    with started_cluster(None, "--object-store-mb", str(args.object_store_mb)) as cluster:
        for job in jobs:
            base = 0.0
            for files in [0, *sizes]:
                with sampling(cluster, before) as peaks:
                    load = archive_job(job, *archives[files], args.workdir / f"out_{job}_{files}", cluster.env,
                                       cluster.address)
                before = set(peaks.seen)
                if files == 0:
                    base = peaks.busiest()["VmHWM"]
                    print(f"| {job} | baseline: 2 files of {BASELINE_WINDOWS} windows | | {load.tasks} | "
                          f"{load.files_a_task} | {load.part_mb:.2f} | "
                          f"{', '.join(f'{v:.0f}' for v in peaks.each_hwm())} | {base:.0f} | | | "
                          f"{peaks.busiest()['RssAnon']:.0f} | {peaks.busiest()['RssFile']:.0f} | "
                          f"{peaks.busiest()['RssShmem']:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)
                    continue
                print(row(job, files, load.file_mb, load, peaks, base), flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
