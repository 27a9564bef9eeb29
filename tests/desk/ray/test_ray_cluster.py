"""`analyze --engine ray --ray-address` on a real two-node cluster (scripts/local_cluster.sh): the pool's bytes,
both nodes used, loopback only, the cluster left as found; a killed node or driver, or a frozen node, never yields a
hang or a silent gap."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
from edge.batch.writer import WORKLOG_NAME
from tests.desk.ray.cluster import (
    JOB_LIMIT_S,
    Cluster,
    frozen,
    hooked,
    need_ray,
    ray_said_nothing,
    session_pids,
    started_by,
    wait_for,
)

need_ray()

TABLES = ("detections.csv", *(f"r{i}.BioLingual.selection.table.txt" for i in range(8)))
PLACEMENT = re.compile(r"ray: pieces per node: (.*)")
OUR_LINE = re.compile(r"(ray: |note: |\d+ file\(s\) analysed, |\S+ [━╸╺ ]+ \d+/\d+ )")
"""A line ``analyze --engine ray`` writes on stderr: the placement, a note, the summary, the progress bar."""


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
    """The command's last words are our ``error:`` line and a ``hint:`` to resume, and Ray logged nothing above."""
    last = [line for line in stderr.splitlines() if line.strip()][-2:]
    return (last[0].startswith("error: the Ray job stopped") and last[1].startswith("hint:") and "--resume" in last[1]
            and ray_said_nothing(stderr))


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
    theirs = [line for line in job.stderr.splitlines() if line.strip() and not OUR_LINE.match(line)]
    assert not theirs, job.stderr  # nothing of Ray's: no C++ core line at the workers' start, no log line
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
    cluster.kill_node()
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
    crashing = hooked(dict(os.environ), BIOLINGUAL_TEST_CRASH_ON="r5.")
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


STALL_S = 90
"""``--ray-stall-seconds`` of the frozen-node tests: more than the cluster's start-up of a job under load."""


def test_frozen_workers_on_a_node_end_the_job_in_bounded_time_naming_the_pieces_and_resume_finishes(
        holding_cluster: Cluster, held: Path, archive: Path, local_outputs: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    """The second node's workers stop answering (SIGSTOP) while one holds a piece; the node stays alive to Ray, so
    nothing of Ray's ends the job: our stall limit does, with the pieces not done and --resume named."""
    cluster = holding_cluster
    before = cluster.free_cpus()
    out = tmp_path / "cluster"
    command = [*analyze_command(archive, example_bundle, example_labels[0], out, cluster.address),
               "--ray-stall-seconds", str(STALL_S)]
    (held / "hold").touch()
    job = subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: started_by(held, cluster.node_workers()), "the second node to start a piece", JOB_LIMIT_S)
    with frozen(cluster.node_workers()):
        (held / "hold").unlink()  # the head's actor goes on; the frozen node's piece never comes back
        frozen_at = time.monotonic()
        _, stderr = job.communicate(timeout=JOB_LIMIT_S)  # never a hang
        ended_after = time.monotonic() - frozen_at
    print(f"the job ended {ended_after:.0f} s after the freeze with rc {job.returncode}: {stderr[-300:]}")
    assert job.returncode != 0
    assert re.search(r"the Ray job stopped: no result came for \d+ s .*; pieces \d+-24 \(\d+ of 24 here; files "
                     r".*\) not done", stderr), stderr
    assert ended_with_one_line_error(stderr) and "--ray-stall-seconds" in stderr.splitlines()[-1]
    assert logged_pieces(out) < 24
    wait_for(lambda: cluster.free_cpus() == before, "the failed job's actors to give their CPUs back")
    resumed = subprocess.run([*command, "--resume"], env=cluster.env, capture_output=True, text=True,
                             timeout=JOB_LIMIT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert logged_pieces(out) == 24 and same_outputs(out, local_outputs)
