"""``analyze`` with a pool worker killed (``kill -9``, as the OOM killer does): the pieces it held are retried
once, alone; a piece whose worker dies twice fails the run (exit 1) naming it. Never a hang, never rc 0 with
rows missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

RUN_TIMEOUT_S = 300
"""A hang guard: the whole run takes well under a minute here."""
COPIES = 4


def worker_pids(parent: int) -> list[int]:
    """Pool worker processes of ``parent`` (spawned interpreters, not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in command and b"resource_tracker" not in command:
            found.append(int(entry.name))
    return sorted(found)


def analyze_command(folder: Path, bundle: Path, labels: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "edge", "analyze", str(folder), "--labels", str(labels), "--bundle", str(bundle),
            "--out", str(out), "--top-k", "2", "--workers", str(workers), "--piece-seconds", "10"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory, toad_in_night: Path) -> Path:
    folder = tmp_path_factory.mktemp("dead_worker")
    for number in range(COPIES):
        shutil.copy(toad_in_night, folder / f"rec{number}.wav")
    return folder


def run_killing(command: list[str], kills: int) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``command``, ``kill -9`` a pool worker ``kills`` times (each a worker started after the last kill:
    the first of a pool with both workers up, then the one the restarted pool runs a retried piece on)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    done = 0
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while done < kills and process.poll() is None and time.monotonic() < deadline:
        workers = [pid for pid in worker_pids(process.pid) if pid not in seen]
        if workers and (done or len(workers) == 2):
            seen.update(workers)
            os.kill(workers[0], signal.SIGKILL)
            done += 1
        time.sleep(0.02)  # polling /proc for the workers' appearance
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), done


@pytest.fixture(scope="module")
def clean_rows(recordings: Path, example_bundle: Path, example_labels: tuple[Path, Path],
               tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("clean")
    command = analyze_command(recordings, example_bundle, example_labels[0], out, 1)
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return (out / "detections.csv").read_text(encoding="utf-8").splitlines()


def test_a_worker_killed_once_is_retried_and_nothing_is_lost(recordings: Path, example_bundle: Path,
                                                             example_labels: tuple[Path, Path],
                                                             clean_rows: list[str], tmp_path: Path) -> None:
    done, kills = run_killing(analyze_command(recordings, example_bundle, example_labels[0], tmp_path, 2), 1)
    assert kills == 1, "the run ended before a worker could be killed"
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "detections.csv").read_text(encoding="utf-8").splitlines() == clean_rows


def test_a_piece_whose_worker_dies_twice_fails_the_run_naming_it(recordings: Path, example_bundle: Path,
                                                                 example_labels: tuple[Path, Path],
                                                                 clean_rows: list[str], tmp_path: Path) -> None:
    done, kills = run_killing(analyze_command(recordings, example_bundle, example_labels[0], tmp_path, 2), 2)
    assert kills == 2, "the run ended before its retried piece's worker could be killed"
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    failed = [line for line in done.stderr.splitlines() if "died twice" in line]
    assert len(failed) == 1 and str(recordings) in failed[0], done.stderr
    rows = (tmp_path / "detections.csv").read_text(encoding="utf-8").splitlines()
    missing = [line.split(",") for line in clean_rows if line not in rows]
    assert set(rows) <= set(clean_rows) and missing  # every row but the failed piece's, each once
    starts = [float(cells[1]) for cells in missing]
    assert len({cells[0] for cells in missing}) == 1 and max(starts) - min(starts) < 20  # one piece of one file
