"""`analyze --engine ray --ray-address` on a real two-node cluster (scripts/local_cluster.sh): the pool's bytes,
both nodes used, loopback only, the cluster left as found; a killed node or driver never yields a silent gap."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
from edge.batch.writer import WORKLOG_NAME

try:
    import ray  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # .ci/run installs the [ray] extra: a missing Ray there is a broken install
        raise
    pytest.skip("Ray is an optional extra: pip install 'biolingual-edge[ray]'", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "local_cluster.sh"
TABLES = ("detections.csv", *(f"r{i}.BioLingual.selection.table.txt" for i in range(8)))
PLACEMENT = re.compile(r"ray: pieces per node: (.*)")
JOB_LIMIT_S = 400
"""A job on the cluster ends (done or failed) well within this; longer is the hang the issue forbids."""


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


def wait_for(condition: object, what: str, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
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


@pytest.fixture
def archive(tmp_path: Path, toad_in_night: Path) -> Path:
    """Eight 60 s recordings: 24 pieces of 20 s."""
    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(8):
        (folder / f"r{i}.wav").write_bytes(toad_in_night.read_bytes())
    return folder


@pytest.fixture
def local_outputs(archive: Path, example_bundle: Path, example_labels: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "local"
    analyze_paths([archive], example_labels[0], example_bundle, out, AnalyzeOptions(top_k=2),
                  run=RunOptions(workers=1, piece_s=20))
    return out


def analyze_command(archive: Path, bundle: Path, labels: Path, out: Path, address: str | None) -> list[str]:
    """``analyze --engine ray`` on ``address`` (None: a private local instance) with two actors."""
    return [sys.executable, "-m", "edge", "analyze", str(archive), "--labels", str(labels), "--bundle", str(bundle),
            "--out", str(out), "--top-k", "2", "--piece-seconds", "20", "--engine", "ray", "--workers", "2",
            *(["--ray-address", address] if address else [])]


def same_outputs(a: Path, b: Path) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in TABLES)


def ended_with_one_line_error(stderr: str) -> bool:
    """The command's last words are our ``error:`` line and a ``hint:`` to resume (Ray logs its own above)."""
    last = [line for line in stderr.splitlines() if line.strip()][-2:]
    return last[0].startswith("error: the Ray job stopped") and last[1].startswith("hint:") and "--resume" in last[1]


def logged_pieces(out: Path) -> int:
    log = out / WORKLOG_NAME
    return max(0, log.read_text().count("\n") - 1) if log.exists() else 0


def test_cluster_job_equals_pool_uses_both_nodes_and_leaves_cluster_as_found(
        cluster: Cluster, archive: Path, local_outputs: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    assert cluster.address.startswith("127.0.0.1:")
    assert cluster.listeners() and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in
                                       cluster.listeners()), cluster.listeners()
    before = cluster.free_cpus()
    assert before == (2.0, 2.0, 2)
    out = tmp_path / "cluster"
    job = subprocess.run(analyze_command(archive, example_bundle, example_labels[0], out, cluster.address),
                         env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert job.returncode == 0, job.stderr
    assert same_outputs(out, local_outputs)
    assert logged_pieces(out) == 24
    placement = dict(reversed(part.split(" on node ")) for part in PLACEMENT.findall(job.stderr)[0].split(", "))
    nodes = {cluster.node_id(cluster.head_sid)[:12], cluster.node_id(cluster.node_sid)[:12]}
    assert set(placement) == nodes, (placement, nodes)  # each node ran pieces
    assert sum(int(n) for n in placement.values()) == 24
    wait_for(lambda: cluster.free_cpus() == before, "the job's actors to give their CPUs back")
    assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in cluster.listeners()), cluster.listeners()


def test_cluster_job_survives_a_killed_node_or_says_what_is_missing(
        cluster: Cluster, archive: Path, local_outputs: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    command = analyze_command(archive, example_bundle, example_labels[0], out, cluster.address)
    job = subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node_workers = session_pids(cluster.node_sid)
    # kill the second node once it computes pieces for this job (a new worker there) and some are written
    wait_for(lambda: len(session_pids(cluster.node_sid) - node_workers) > 0 and logged_pieces(out) > 0,
             "the second node to run pieces", JOB_LIMIT_S)
    killed_at = logged_pieces(out)
    subprocess.run([str(SCRIPT), "kill-node", str(cluster.directory)], check=True, timeout=60)
    assert not session_pids(cluster.node_sid)
    _, stderr = job.communicate(timeout=JOB_LIMIT_S)
    assert killed_at < 24, "the job ended before the node was killed: nothing was tested"
    print(f"node killed after {killed_at} of 24 pieces; the job ended with rc {job.returncode}: {stderr[-300:]}")
    if job.returncode == 0:  # Ray's retries healed it: every piece, the pool's bytes
        assert logged_pieces(out) == 24 and same_outputs(out, local_outputs)
        return
    assert re.search(r"pieces \d+-24 \(\d+ of 24 here; files .*\) not done", stderr), stderr
    assert ended_with_one_line_error(stderr)
    assert logged_pieces(out) < 24
    resumed = subprocess.run([*command, "--resume"], env=cluster.env, capture_output=True, text=True,
                             timeout=JOB_LIMIT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert logged_pieces(out) == 24 and same_outputs(out, local_outputs)


def test_killed_driver_resumes_to_the_pool_bytes_and_frees_the_cluster(
        cluster: Cluster, archive: Path, local_outputs: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    before = cluster.free_cpus()
    out = tmp_path / "cluster"
    command = analyze_command(archive, example_bundle, example_labels[0], out, cluster.address)
    job = subprocess.Popen(command, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: logged_pieces(out) > 0, "the first piece to be written", JOB_LIMIT_S)
    job.kill()
    job.wait(timeout=60)
    assert logged_pieces(out) < 24, "the job ended before the driver was killed: nothing was tested"
    wait_for(lambda: cluster.free_cpus() == before, "Ray to release a dead driver's actors")
    resumed = subprocess.run([*command, "--resume"], env=cluster.env, capture_output=True, text=True,
                             timeout=JOB_LIMIT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert "pieces from the earlier run" in resumed.stderr
    assert logged_pieces(out) == 24 and same_outputs(out, local_outputs)


def test_a_piece_that_kills_its_actor_fails_the_job_naming_the_rest_and_resume_finishes(
        archive: Path, local_outputs: Path, example_bundle: Path, example_labels: tuple[Path, Path],
        tmp_path: Path) -> None:
    out = tmp_path / "ray"
    command = analyze_command(archive, example_bundle, example_labels[0], out, None)
    hook = str(Path(__file__).parent / "crash_hook")
    crashing = {**os.environ, "PYTHONPATH": os.pathsep.join([hook, os.environ.get("PYTHONPATH", "")]),
                "BIOLINGUAL_TEST_CRASH_ON": "r5."}
    job = subprocess.run(command, env=crashing, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert job.returncode != 0
    written = logged_pieces(out)
    assert written <= 15  # at most r0..r4, in plan order, before the crash of r5
    files = ", ".join(f"r{i}.wav" for i in range(written // 3, 8))
    assert re.search(rf"pieces {written + 1}-24 \({24 - written} of 24 here; files {files[:22]}.*\) not done",
                     job.stderr), job.stderr
    assert ended_with_one_line_error(job.stderr)
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert logged_pieces(out) == 24 and same_outputs(out, local_outputs)


@pytest.fixture
def season_db(tmp_path: Path, archive: Path, example_bundle: Path, example_labels: tuple[Path, Path]) -> Path:
    """The eight recordings analysed with --embeddings and collected: an archive of several files."""
    from desk.collect.ingest import collect

    analyze_paths([archive], example_labels[0], example_bundle, tmp_path / "analyzed",
                  AnalyzeOptions(embeddings_dir=tmp_path / "embeddings"), run=RunOptions(workers=1))
    db = tmp_path / "season.duckdb"
    collect([tmp_path / "embeddings"], db)
    return db


def rescore_command(db: Path, bundle: Path, labels: Path, out: Path, *engine: str) -> list[str]:
    return [sys.executable, "-m", "edge", "logs", "rescore", "--db", str(db), "--bundle", str(bundle), "--labels",
            str(labels), "--out", str(out), "--top-k", "2", "--format", "csv,raven,audacity", *engine]


def test_rescore_as_a_ray_job_over_the_archive_files_equals_the_local_scan_row_for_row(
        cluster: Cluster, season_db: Path, example_bundle: Path, example_labels: tuple[Path, Path],
        tmp_path: Path) -> None:
    from desk.archive.windows import open_store

    with open_store(season_db) as store:
        files = store.files()
    assert len(files) > 1 and all(Path(f.path).is_file() for f in files)
    local = subprocess.run(rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "local"),
                           capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert local.returncode == 0, local.stderr
    before = cluster.free_cpus()
    on_cluster = subprocess.run(rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "ray",
                                                "--engine", "ray", "--ray-address", cluster.address),
                                env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert on_cluster.returncode == 0, on_cluster.stderr
    written = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(written) == 1 + 2 * 8 and written == sorted(p.name for p in (tmp_path / "ray").iterdir())
    for name in written:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert (tmp_path / "ray" / "detections.csv").read_text().count("\n") == 1 + 8 * 11 * 2
    wait_for(lambda: cluster.free_cpus() == before, "the scan's workers to give their CPUs back")
