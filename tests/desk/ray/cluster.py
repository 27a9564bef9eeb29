"""The two-node cluster of scripts/local_cluster.sh as the Ray tests use it: start/stop, its processes (by
session), its listeners, its free CPUs, and waiting on observable state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.card.embedformat import UNKNOWN_UTC_US

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "local_cluster.sh"
HOOK = Path(__file__).resolve().parent / "crash_hook"
"""A sitecustomize for Ray workers: crash on a file, or hold before reading an archive file (see its docstring)."""
RAY_LOG_LINE = re.compile(r"\t(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+:\d+ -- |^Token authentication", re.M)
"""A line of Ray's (or Ray Data's) Python logging on the driver's console."""
JOB_LIMIT_S = 400
"""A job on the cluster ends (done or failed) well within this; longer is the hang the issue forbids."""


def need_ray() -> None:
    """Skip the calling test module where Ray (an optional extra) is not installed; in CI, where .ci/run installs
    the [ray] extra, a missing Ray is a broken install and is raised."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("Ray is an optional extra: pip install 'biolingual-edge[ray]'", allow_module_level=True)


@dataclass
class Cluster:
    address: str
    directory: Path
    env: dict[str, str]
    head_sid: int
    node_sid: int

    def node_id(self, sid: int) -> str:
        """The Ray node id of the raylet in session ``sid`` (its command line names it)."""
        for pid in session_pids(sid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"/raylet"):
                return next(a for a in argv if a.startswith(b"--node_id=")).decode().split("=", 1)[1]
        raise AssertionError(f"no raylet in session {sid}")

    def listeners(self) -> list[str]:
        """Local addresses of every socket our cluster's processes listen on."""
        ours = session_pids(self.head_sid) | session_pids(self.node_sid)
        lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
        return [line.split()[3] for line in lines if {int(p) for p in re.findall(r"pid=(\d+)", line)} & ours]

    def free_cpus(self) -> tuple[float, float, int]:
        """(available CPUs, total CPUs, live nodes) as the cluster sees them, asked by a separate driver."""
        probe = (f"import ray; ray.init(address={self.address!r}, log_to_driver=False, configure_logging=False); "
                 "print(ray.available_resources().get('CPU', 0), ray.cluster_resources().get('CPU', 0), "
                 "sum(n['Alive'] for n in ray.nodes()))")
        out = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True,
                             timeout=120, check=True).stdout.split()
        return float(out[-3]), float(out[-2]), int(out[-1])

    def node_workers(self) -> set[int]:
        """The second node's Ray worker processes (not its raylet or agents): Ray titles them ``ray::…``, its agents
        ``ray::…Agent``."""
        found = set()
        for pid in session_pids(self.node_sid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                if title.startswith(b"ray::") and not title.endswith(b"Agent"):
                    found.add(pid)
            except OSError:
                continue
        return found

    def kill_node(self) -> None:
        """SIGKILL the second node's whole process tree, as a failure would."""
        subprocess.run([str(SCRIPT), "kill-node", str(self.directory)], check=True, timeout=60)
        assert not session_pids(self.node_sid)


def session_pids(sid: int) -> set[int]:
    """Live (non-zombie) processes of session ``sid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def wait_for(condition: Callable[[], object], what: str, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextmanager
def started_cluster(node_env: dict[str, str] | None = None, *options: str) -> Iterator[Cluster]:
    """The two-node cluster, its nodes (and so their workers) started with ``node_env`` added (and ``start``'s
    ``options``); stopped after, and checked to leave no process and no folder behind."""
    started = subprocess.run([str(SCRIPT), "start", *options], capture_output=True, text=True, timeout=300,
                             env={**os.environ, **(node_env or {})})
    assert started.returncode == 0, started.stderr
    printed = dict(line.split("=", 1) for line in started.stdout.splitlines())
    directory = Path(printed["CLUSTER_DIR"])
    state = dict(line.split("=", 1) for line in (directory / "cluster.env").read_text().splitlines())
    env = {**os.environ, **{name: printed[name] for name in
                            ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}}
    found = Cluster(printed["RAY_ADDRESS"], directory, env, int(state["HEAD_SID"]), int(state["NODE_SID"]))
    try:
        yield found
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
    assert not session_pids(found.head_sid) | session_pids(found.node_sid), "cluster processes outlived stop"
    assert not directory.exists()


@contextmanager
def frozen(pids: set[int]) -> Iterator[set[int]]:
    """``pids`` stopped (SIGSTOP: alive, holding their tasks, answering nothing) until the block ends."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def started_by(held: Path, pids: set[int]) -> bool:
    """Whether one of ``pids`` has started work held at ``held`` (the hook's ``started.<pid>.<n>`` markers)."""
    return any(int(m.name.split(".")[1]) in pids for m in held.glob("started.*"))


def hooked(env: dict[str, str], **variables: str) -> dict[str, str]:
    """``env`` with :data:`HOOK` first on PYTHONPATH and the hook's ``variables`` set."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(HOOK), env.get("PYTHONPATH", "")]), **variables}


def ray_said_nothing(stderr: str) -> bool:
    """No traceback and no Ray log line (progress, warnings, a failed task's stack) on the driver's console."""
    return "Traceback" not in stderr and not RAY_LOG_LINE.search(stderr)


PEAK_LINE = re.compile(r"ray: worker peak memory (\d+) MB \((\d+) workers; largest archive file ([\d.]+) MB; "
                       r"(\d+) tasks, at most (\d+) archive file a task, largest part sent ([\d.]+) MB\)")


@dataclass
class JobLoad:
    """What an archive job on Ray says of its workers (its ``ray: worker peak memory …`` line)."""

    peak_mb: float
    """The busiest worker's peak resident memory."""
    workers: int
    file_mb: float
    """The largest archive file."""
    tasks: int
    files_a_task: int
    """The most archive files one Ray task read."""
    part_mb: float
    """The largest part a task sent back."""


def job_load(stderr: str) -> JobLoad:
    found = PEAK_LINE.search(stderr)
    assert found, stderr
    return JobLoad(float(found[1]), int(found[2]), float(found[3]), int(found[4]), int(found[5]), float(found[6]))


def synthetic_archive(folder: Path, files: int, windows: int, labels: int) -> tuple[Path, Path, Path]:
    """(database, bundle, label list): ``files`` archive files of ``windows`` random 512-d windows each (one unit
    boot, one stream, 5 s apart), and a bundle of ``labels`` random label vectors (its audio model never runs)."""
    from desk.archive.windows import WindowBatch, open_store
    from tests.desk.archive.test_rescore_memory import RATE, synthetic_bundle, unit_rows

    bundle, label_list, space = synthetic_bundle(folder / "bundle", labels)
    db = folder / "season.duckdb"
    with open_store(db, writable=True) as store:
        for i in range(files):
            starts = (np.arange(windows, dtype=np.int64) + i * windows) * 5 * RATE
            store.insert(WindowBatch(f"part{i}.emb", "marsh-01", "marsh", "boot-1", RATE, space, None, "/cards/m",
                                     np.zeros(windows, np.int32), starts, starts + 10 * RATE,
                                     np.full(windows, UNKNOWN_UTC_US, np.int64), ["none"] * windows,
                                     unit_rows(windows, i).astype(np.float16)))
    return db, bundle, label_list


NEAREST_ON_RAY = """import sys, numpy as np
from pathlib import Path
from desk.archive.ray_scan import nearest_on_ray
from desk.archive.windows import open_store
db, labels, address = sys.argv[1:4]
query = next(iter(np.load(next(Path(labels).glob("*.npz")))["embeddings"][:1]))
with open_store(Path(db)) as store:
    ids, _ = nearest_on_ray(store.files(), query, 10, address or None)
print(len(ids))
"""
"""``logs search --exact --engine ray``'s job over a synthetic archive, whose bundle has no text tower: the first
label's vector is the query."""


def archive_job(job: str, db: Path, bundle: Path, labels: Path, out: Path, env: dict[str, str],
                address: str | None = None) -> JobLoad:
    """What the workers of ``logs rescore`` on Ray (``job`` "rescore"), or of the exact search's Ray job ("search",
    :data:`NEAREST_ON_RAY`), held; on the private local instance, or the cluster at ``address``."""
    if job == "rescore":
        command = [sys.executable, "-m", "edge", "logs", "rescore", "--db", str(db), "--bundle", str(bundle),
                   "--labels", str(labels), "--format", "csv", "--out", str(out), "--engine", "ray",
                   *(["--ray-address", address] if address else [])]
    else:
        command = [sys.executable, "-c", NEAREST_ON_RAY, str(db), str(bundle / "labels"), address or ""]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert done.returncode == 0, done.stderr
    return job_load(done.stderr)
