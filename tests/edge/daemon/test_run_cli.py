"""`run --input`: the stream starts at the recording's own time, and the run ends with one summary line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import soundfile as sf

from desk.collect.cards import read_card
from tests.conftest import REPO

RATE = 48_000


def test_input_file_stream_starts_at_the_recorders_time_and_the_run_says_what_it_did(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    audio, rate = sf.read(toad_in_night, dtype="float32")
    recording = tmp_path / "20240903_202615.WAV"  # AudioMoth with a time zone: the name is local time
    with sf.SoundFile(recording, "w", rate, 1, "PCM_16") as handle:
        handle.comment = "Recorded at 20:26:15 03/09/2024 (UTC+1) by AudioMoth 24F3190361DA6B7D"
        handle.write(audio)
    card = tmp_path / "card"
    command = [sys.executable, "-m", "edge", "run", "--labels", str(example_labels[0]), "--bundle",
               str(example_bundle), "--log-dir", str(card), "--input", str(recording), "--fast", "--threshold",
               "0.5", "--score-mode", "softmax", "--confirm", "1/1"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    table = read_card(card).detections
    assert table.rows, done.stderr
    cols = {name: i for i, name in enumerate(table.columns)}
    starts = sorted((int(r[cols["start_sample"]]), r[cols["utc"]]) for r in table.rows)
    sample, utc = starts[0]
    expected = datetime(2024, 9, 3, 19, 26, 15, tzinfo=timezone.utc) + timedelta(seconds=sample / RATE)
    assert datetime.fromisoformat(utc) == expected
    last = done.stderr.strip().splitlines()[-1]
    assert f"{len(table.rows)} detection(s) -> card log {card}" in last and "window(s) analysed (60 s" in last


def test_help_names_the_default_log_folder() -> None:
    done = subprocess.run([sys.executable, "-m", "edge", "run", "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, timeout=60, check=False)
    assert "else ./logs" in done.stdout
