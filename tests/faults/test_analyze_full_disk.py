"""``analyze`` on a disk that fills up mid-run (a real size-capped tmpfs): one ``error:`` line naming the output
folder and a ``hint:`` saying ``--resume``, exit 1, no traceback; after space is freed, ``--resume`` finishes
with every output byte-identical to a run that never ran out of space."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cardlog_support import fill_up, small_filesystem
from tests.conftest import REPO

RUN_TIMEOUT_S = 300
"""A hang guard: each run takes well under a minute here."""
ROOM_BYTES = 3 * 4096
"""Space left on the full disk: a few tmpfs pages, so the run starts and runs out after its first pieces."""


def analyze(folder: Path, bundle: Path, labels: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge", "analyze", str(folder), "--labels", str(labels), "--bundle", str(bundle),
               "--out", str(out), "--top-k", "2", "--workers", "1", "--piece-seconds", "10", *extra]
    return subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, check=False)


def contents(folder: Path) -> dict[str, object]:
    """Every output's bytes; ``run.json`` as data without its finish time (the one thing two runs differ in)."""
    found: dict[str, object] = {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
    record = json.loads(found.pop("run.json"))
    record.pop("finished_utc")
    return {**found, "run.json": record}


def test_a_disk_full_under_analyze_is_one_line_and_resume_finishes_byte_identical(
        toad_in_night: Path, example_bundle: Path, example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for number in range(3):
        shutil.copy(toad_in_night, recordings / f"rec{number}.wav")
    clean = analyze(recordings, example_bundle, example_labels[0], tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        filler = fill_up(disk)
        os.truncate(filler, filler.stat().st_size - ROOM_BYTES)
        out = disk / "results"
        full = analyze(recordings, example_bundle, example_labels[0], out)
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(out) in errors[0] and "No space left on device" in errors[0], full.stderr
        assert "hint:" in full.stderr and "--resume" in full.stderr
        filler.unlink()
        resumed = analyze(recordings, example_bundle, example_labels[0], out, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert "pieces from the earlier run" in resumed.stderr  # it did stop part-way, and went on from there
        assert contents(out) == contents(tmp_path / "clean")
