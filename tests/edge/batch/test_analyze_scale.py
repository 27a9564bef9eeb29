"""`analyze` at scale: a process pool and split files give the single pass's outputs; a kill -9'd run resumes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
from edge.batch.piece_analysis import PieceResult
from edge.batch.pieces import Piece
from edge.batch.run_record import RUN_RECORD
from edge.batch.tables import RAVEN_SUFFIX
from edge.batch.writer import WORKLOG_NAME
from edge.cli import app
from tests.conftest import NIGHT, REPO

runner = CliRunner()
KILL_WAIT_S = 120.0
"""Upper bound for the killed run to log its first pieces (a hang guard, not a pacing sleep)."""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, toad_in_night: Path, shared_audio: Path) -> Path:
    """Two 60 s 48 kHz recordings with the same name in two folders, a 22 kHz one, and a broken file."""
    root = tmp_path_factory.mktemp("archive")
    for folder in ("unit01", "unit02"):
        (root / folder).mkdir()
        (root / folder / "20240601_050000.wav").write_bytes(toad_in_night.read_bytes())
    (root / "unit02" / "night.wav").write_bytes((shared_audio / NIGHT).read_bytes())
    (root / "unit02" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    return root


def analyze(archive: Path, bundle: Path, labels: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["analyze", str(archive), "--labels", str(labels), "--bundle", str(bundle),
                                 "--out", str(out), "--top-k", "2", *extra])
    return result.exit_code, result.output


def outputs(out: Path) -> dict[str, str]:
    """Every output file's text except the work log, and the run record without its finishing time."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(out.iterdir()) if p.name != WORKLOG_NAME}
    record = json.loads(texts.pop(RUN_RECORD))
    record.pop("finished_utc")
    texts[RUN_RECORD] = json.dumps(record, sort_keys=True)
    return texts


def test_pool_and_split_files_equal_the_single_pass(archive: Path, example_bundle: Path,
                                                    example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    labels = example_labels[0]
    code, output = analyze(archive, example_bundle, labels, tmp_path / "one", "--workers", "1",
                           "--piece-seconds", "3600", "--batch", "4")
    assert code == 1 and "broken.wav" in output and "3 file(s) analysed" in output
    single = outputs(tmp_path / "one")
    code, output = analyze(archive, example_bundle, labels, tmp_path / "pool", "--workers", "2",
                           "--piece-seconds", "10", "--batch", "4")  # pieces round up to whole batches: 20 s
    assert code == 1 and "Traceback" not in output
    pooled = outputs(tmp_path / "pool")
    assert pooled == single  # byte for byte: same rows in the same order, same Raven tables
    twin = next(n for n in single if re.fullmatch(r"20240601_050000-[0-9a-f]{8}" + re.escape(RAVEN_SUFFIX), n))
    assert set(single) == {"detections.csv", "20240601_050000" + RAVEN_SUFFIX, twin, "night" + RAVEN_SUFFIX,
                           RUN_RECORD}  # two recordings with one stem: the second gets a hash of its path
    rows = list(csv.DictReader(single["detections.csv"].splitlines()))
    assert len(rows) == 2 * 2 * 11 + 2  # two 60 s files: 11 windows × top-2; the 10 s file: one window
    log = (tmp_path / "pool" / WORKLOG_NAME).read_text().splitlines()
    assert len(log) == 1 + 3 + 3 + 1 + 1  # header, two files in three 20 s pieces, two whole-file pieces


def test_more_threads_than_cores_is_one_line(archive: Path, example_bundle: Path,
                                             example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    code, output = analyze(archive, example_bundle, example_labels[0], tmp_path, "--workers", str(cores),
                           "--threads", "2")
    assert code == 2 and "core(s) here" in output and "Traceback" not in output


def _log_lines(out: Path) -> int:
    path = out / WORKLOG_NAME
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0


def test_killed_run_resumes_without_redoing_or_duplicating(archive: Path, example_bundle: Path,
                                                           example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    labels = example_labels[0]
    args = [str(archive), "--labels", str(labels), "--bundle", str(example_bundle), "--top-k", "2",
            "--piece-seconds", "1", "--workers", "1"]
    analyze(archive, example_bundle, labels, tmp_path / "clean", *args[5:])
    clean = outputs(tmp_path / "clean")
    total_lines = _log_lines(tmp_path / "clean")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "edge", "analyze", *args, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_WAIT_S
    while _log_lines(out) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = _log_lines(out) - 1
    assert 2 <= done < total_lines - 1, "the run must be killed after two pieces and before the end"
    # a kill in the middle of a piece leaves rows and a log line that were never acknowledged: cut on resume
    with open(out / "detections.csv", "a", encoding="utf-8") as handle:
        handle.write("half a row,0.0")
    with open(out / WORKLOG_NAME, "a", encoding="utf-8") as handle:
        handle.write('{"piece": "torn')
    code, output = analyze(archive, example_bundle, labels, out, *args[5:], "--resume")
    assert code == 1 and f"({done} of {total_lines - 1} pieces from the earlier run)" in output
    assert outputs(out) == clean
    entries = [json.loads(line) for line in (out / WORKLOG_NAME).read_text().splitlines()[1:]]
    assert len({e["piece"] for e in entries}) == len(entries) == total_lines - 1


def test_resume_refuses_a_different_job(archive: Path, example_bundle: Path, example_labels: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    labels = example_labels[0]
    analyze(archive / "unit01", example_bundle, labels, tmp_path, "--workers", "1")
    code, output = analyze(archive / "unit01", example_bundle, labels, tmp_path, "--workers", "1", "--hop", "2.5",
                           "--resume")
    assert code == 2 and "belongs to a different job" in output and "Traceback" not in output
    assert "changed: hop_s 5.0 -> 2.5" in " ".join(output.split())  # names the setting, not "something"


class CountingSink:
    """An extra output that counts windows; its checkpoint is the pieces written so far."""

    name = "counting"

    def __init__(self) -> None:
        self.resumed_from: object = "never called"
        self.windows: list[int] = []

    def resume(self, state: object) -> None:
        self.resumed_from = state

    def write(self, piece: Piece, result: PieceResult) -> None:
        assert result.embeddings is not None and result.embeddings.shape[0] == len(result.window_starts)
        self.windows.append(len(result.window_starts))

    def checkpoint(self) -> int:
        return len(self.windows)

    def close(self) -> None:
        pass


def test_extra_sinks_get_every_window_embedding_and_their_checkpoint_on_resume(
        toad_in_night: Path, example_bundle: Path, example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    first = CountingSink()
    run = RunOptions(workers=1, piece_s=20)
    analyze_paths([toad_in_night], example_labels[0], example_bundle, tmp_path, AnalyzeOptions(), run=run,
                  sinks=[first], keep_embeddings=True)
    assert first.resumed_from is None and first.windows == [4, 4, 3]
    again = CountingSink()
    result = analyze_paths([toad_in_night], example_labels[0], example_bundle, tmp_path, AnalyzeOptions(),
                           run=RunOptions(workers=1, piece_s=20, resume=True), sinks=[again], keep_embeddings=True)
    assert again.resumed_from == 3 and again.windows == [] and result.pieces_resumed == 3
