"""The archive on a real two-node cluster (scripts/local_cluster.sh): `logs rescore --engine ray` equals the local
rescore byte for byte (files streamed back chunk by chunk), and a node killed or frozen while it reads an archive
file, or a killed driver, never yields a hang or a silent gap."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.desk.ray.cluster import (
    JOB_LIMIT_S,
    Cluster,
    archive_job,
    frozen,
    hooked,
    need_ray,
    ray_said_nothing,
    session_pids,
    started_by,
    synthetic_archive,
    wait_for,
)

need_ray()


def rescore_command(db: Path, bundle: Path, labels: Path, out: Path, *engine: str) -> list[str]:
    return [sys.executable, "-m", "edge", "logs", "rescore", "--db", str(db), "--bundle", str(bundle), "--labels",
            str(labels), "--out", str(out), "--top-k", "2", "--format", "csv,raven,audacity", *engine]


def assert_same_folders(got: Path, expected: Path) -> None:
    names = sorted(p.name for p in expected.iterdir())
    assert names == sorted(p.name for p in got.iterdir())
    for name in names:
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name


def one_line_error(stderr: str) -> bool:
    """Our ``error:`` line and its ``hint:``, and nothing else (nothing of Ray's: no traceback, no log line)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return (len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
            and ray_said_nothing(stderr))


@pytest.fixture
def local_rescore(season_db: Path, example_bundle: Path, example_labels: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "local"
    local = subprocess.run(rescore_command(season_db, example_bundle, example_labels[0], out),
                           capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert local.returncode == 0, local.stderr
    return out


def test_rescore_as_a_ray_job_over_the_archive_files_equals_the_local_scan_row_for_row(
        cluster: Cluster, season_db: Path, local_rescore: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    from desk.archive.windows import open_store

    with open_store(season_db) as store:
        files = store.files()
    assert len(files) > 1 and all(Path(f.path).is_file() for f in files)
    before = cluster.free_cpus()
    on_cluster = subprocess.run(rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "ray",
                                                "--engine", "ray", "--ray-address", cluster.address),
                                env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert on_cluster.returncode == 0, on_cluster.stderr
    assert len(list(local_rescore.iterdir())) == 1 + 2 * 8
    assert_same_folders(tmp_path / "ray", local_rescore)
    assert (tmp_path / "ray" / "detections.csv").read_text().count("\n") == 1 + 8 * 11 * 2
    wait_for(lambda: cluster.free_cpus() == before, "the scan's workers to give their CPUs back")


def test_rescore_survives_a_node_killed_while_it_reads_or_names_the_files_not_read(
        holding_cluster: Cluster, held: Path, season_db: Path, local_rescore: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    cluster = holding_cluster
    command = rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "ray", "--engine", "ray",
                              "--ray-address", cluster.address)
    (held / "hold").touch()
    job = subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def second_node_reading() -> bool:
        return any(int(m.name.split(".")[1]) in session_pids(cluster.node_sid) for m in held.glob("started.*"))

    wait_for(second_node_reading, "a worker on the second node to start reading an archive file", JOB_LIMIT_S)
    cluster.kill_node()
    (held / "hold").unlink()
    _, stderr = job.communicate(timeout=JOB_LIMIT_S)  # never a hang
    print(f"the job ended with rc {job.returncode}: {stderr[-400:]}")
    if job.returncode == 0:  # Ray's retries read the lost node's files again on the head: every row, the same bytes
        assert_same_folders(tmp_path / "ray", local_rescore)
        return
    assert re.search(r"\d+ of \d+ archive files not read \(from /", stderr), stderr
    assert one_line_error(stderr), stderr
    again = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert again.returncode == 0, again.stderr
    assert_same_folders(tmp_path / "ray", local_rescore)


def test_rescore_on_ray_that_cannot_read_a_file_fails_in_one_line_naming_the_files_and_a_rerun_finishes(
        season_db: Path, local_rescore: Path, example_bundle: Path, example_labels: tuple[Path, Path],
        tmp_path: Path) -> None:
    from desk.archive.windows import open_store

    with open_store(season_db) as store:
        files = [Path(f.path).name for f in store.files()]
    doomed = files[len(files) // 2]
    command = rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "ray", "--engine", "ray")
    job = subprocess.run(command, env=hooked(dict(os.environ), BIOLINGUAL_TEST_CRASH_ON=doomed), capture_output=True,
                         text=True, timeout=JOB_LIMIT_S)
    assert job.returncode != 0
    named = re.search(r"the Ray scan stopped: .*; (\d+) of (\d+) archive files not read \(from (/\S+)\)", job.stderr)
    assert named, job.stderr
    first_missing = files.index(Path(named[3]).name)  # the driver had every file before it, in window order
    assert first_missing <= files.index(doomed) and int(named[1]) == len(files) - first_missing
    assert int(named[2]) == len(files)
    assert one_line_error(job.stderr), job.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert again.returncode == 0, again.stderr
    assert_same_folders(tmp_path / "ray", local_rescore)


def search_command(db: Path, bundle: Path, example: str, out: Path, *engine: str) -> list[str]:
    return [sys.executable, "-m", "edge", "logs", "search", "--db", str(db), "--bundle", str(bundle), "--example",
            example, "--top", "12", "--exact", "--out", str(out), *engine]


def test_exact_search_and_rescore_config_on_the_cluster_equal_the_local_results(
        cluster: Cluster, season_db: Path, local_rescore: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    """Eight copies of one recording: every hit is tied eight ways, so the order (ties by window id) and the cut
    at 12 hits must come out of the cluster's per-file best exactly as out of the local scan."""
    on_cluster = ("--engine", "ray", "--ray-address", cluster.address)
    example = f"{toad_in_night}@40"
    for where, engine in (("local", ()), ("ray", on_cluster)):
        found = subprocess.run(search_command(season_db, example_bundle, example, tmp_path / f"search_{where}",
                                              *engine), env=cluster.env, capture_output=True, text=True,
                               timeout=JOB_LIMIT_S)
        assert found.returncode == 0, found.stderr
    assert_same_folders(tmp_path / "search_ray", tmp_path / "search_local")
    hits = (tmp_path / "search_local" / "hits.csv").read_text().splitlines()[1:]
    assert len(hits) == 12 and len({line.split(",")[1] for line in hits}) < 12  # tied scores inside the 12

    with open(local_rescore / "detections.csv", newline="", encoding="utf-8") as table:
        lowest = sorted({float(row["score"]) for row in csv.DictReader(table) if row["label"] == "toad"})[:2]
    config = tmp_path / "unit.yaml"
    config.write_text(f"unit:\n  unit_id: marsh-01\nmodel:\n  bundle: {example_bundle}\nanalysis:\n"
                      f"  labels: {example_labels[0]}\n  score_mode: logit\n  threshold: -1000\n"
                      f"  label_thresholds:\n    toad: {sum(lowest) / 2}\n", encoding="utf-8")  # some windows pass
    for where, engine in (("local", ()), ("ray", on_cluster)):
        rescored = subprocess.run(rescore_command(season_db, example_bundle, example_labels[0],
                                                  tmp_path / f"config_{where}", "--config", str(config), *engine),
                                  env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
        assert rescored.returncode == 0, rescored.stderr
    assert_same_folders(tmp_path / "config_ray", tmp_path / "config_local")
    events = (tmp_path / "config_local" / "detections.csv").read_text().splitlines()
    assert sum(",toad," in e for e in events) > 8, events  # the rules cut toad into events, several a stream


def test_a_ray_task_holds_one_archive_file_and_one_chunk_however_many_files_the_archive_has(
        cluster: Cluster, tmp_path: Path) -> None:
    """Archives of 2 and 8 files of 20 000 windows, against 400 labels (10 000-row scan chunks, two a file), on the
    cluster: for the rescore and the exact search, every file is a task of its own and the largest part a task
    holds (one chunk's scores, or one file's best) is the same at both sizes. A job that gave a task several files
    (a larger batch, Ray Data bundling blocks) or a file's whole scores at once would hold more as the archive
    grows; the worker's resident memory itself is benchmarks/ray_worker_memory.py's."""
    from desk.archive.store import SCAN_CELLS

    labels = 400
    chunk_bytes = SCAN_CELLS * 4 + (SCAN_CELLS // labels) * 8  # a chunk's float32 cosines and int64 ids
    held = {}
    for files in (2, 8):
        archive = synthetic_archive(tmp_path / f"files{files}", files, 20_000, labels)
        for job in ("rescore", "search"):
            load = archive_job(job, *archive, tmp_path / f"{job}{files}", cluster.env, cluster.address)
            print(f"{files} files, {job}: {load}")
            assert (load.tasks, load.files_a_task) == (files, 1), load
            held[job, files] = load.part_mb
    assert held["rescore", 2] == held["rescore", 8] == pytest.approx(chunk_bytes / 1e6, rel=0.01)
    assert held["search", 2] == held["search", 8] < 0.01


STALL_S = 90
"""``--ray-stall-seconds`` of the frozen-node test: more than the cluster's start-up of a job under load."""


def test_rescore_with_frozen_workers_on_a_node_ends_in_bounded_time_naming_the_files_and_a_rerun_finishes(
        holding_cluster: Cluster, held: Path, season_db: Path, local_rescore: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    """The second node's workers stop answering (SIGSTOP) while one reads a file; the node stays alive to Ray, so
    nothing of Ray's ends the job: our stall limit does, naming the files not read."""
    cluster = holding_cluster
    before = cluster.free_cpus()
    command = rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "ray", "--engine", "ray",
                              "--ray-address", cluster.address, "--ray-stall-seconds", str(STALL_S))
    (held / "hold").touch()
    job = subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: started_by(held, cluster.node_workers()), "the second node to start reading a file", JOB_LIMIT_S)
    with frozen(cluster.node_workers()):
        (held / "hold").unlink()  # the head goes on reading; the frozen node's file never comes back
        frozen_at = time.monotonic()
        _, stderr = job.communicate(timeout=JOB_LIMIT_S)  # never a hang
        ended_after = time.monotonic() - frozen_at
    print(f"the job ended {ended_after:.0f} s after the freeze with rc {job.returncode}: {stderr[-400:]}")
    assert job.returncode != 0
    assert re.search(r"the Ray scan stopped: no result came for \d+ s .*; \d+ of 8 archive files not read \(from /",
                     stderr), stderr
    assert one_line_error(stderr) and "--ray-stall-seconds" in stderr.splitlines()[-1]
    wait_for(lambda: cluster.free_cpus() == before, "the failed job's workers to give their CPUs back")
    again = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert again.returncode == 0, again.stderr
    assert_same_folders(tmp_path / "ray", local_rescore)


def test_a_killed_rescore_driver_leaves_the_cluster_clean_and_a_rerun_equals_local(
        holding_cluster: Cluster, held: Path, season_db: Path, local_rescore: Path, example_bundle: Path,
        example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    """kill -9 of ``logs rescore`` while its workers read: Ray ends the dead driver's tasks (their workers exit even
    though they are still held), the CPUs come back, and the rerun writes the local tables."""
    cluster = holding_cluster
    before = cluster.free_cpus()
    command = rescore_command(season_db, example_bundle, example_labels[0], tmp_path / "ray", "--engine", "ray",
                              "--ray-address", cluster.address)
    (held / "hold").touch()
    job = subprocess.Popen(command, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list(held.glob("started.*")), "a worker to start reading a file", JOB_LIMIT_S)
    readers = {int(m.name.split(".")[1]) for m in held.glob("started.*")}
    job.kill()
    job.wait(timeout=60)
    wait_for(lambda: not readers & (session_pids(cluster.head_sid) | session_pids(cluster.node_sid)),
             "Ray to end the dead driver's workers")
    wait_for(lambda: cluster.free_cpus() == before, "the dead driver's CPUs to come back")
    (held / "hold").unlink()
    again = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=JOB_LIMIT_S)
    assert again.returncode == 0, again.stderr
    assert_same_folders(tmp_path / "ray", local_rescore)


def test_a_file_of_many_chunks_streams_back_in_order_and_equals_the_local_rescore(tmp_path: Path) -> None:
    """Two files of 30 000 windows against 400 labels: 10 000-window scan chunks, several from each page, each its
    own block from the worker; the tables are the local rescore's, byte for byte."""
    from desk.archive.store import SCAN_CELLS

    labels = 400
    db, bundle, label_list = synthetic_archive(tmp_path / "archive", 2, 30_000, labels)
    assert 30_000 // (SCAN_CELLS // labels) >= 3
    outputs = {}
    for engine in ("local", "ray"):
        outputs[engine] = tmp_path / engine
        done = subprocess.run([sys.executable, "-m", "edge", "logs", "rescore", "--db", str(db), "--bundle",
                               str(bundle), "--labels", str(label_list), "--out", str(outputs[engine]), "--format",
                               "csv", "--top-k", "2", "--engine", engine], capture_output=True, text=True,
                              timeout=JOB_LIMIT_S)
        assert done.returncode == 0, done.stderr
    assert_same_folders(outputs["ray"], outputs["local"])
    assert (outputs["local"] / "detections.csv").read_text().count("\n") == 1 + 2 * 30_000 * 2
