"""Commands whose paths are all absolute do not depend on the working folder: run from a folder deleted under
them (a checkout removed and cloned again while a shell or CI job still stood in it), they work as anywhere else.
Before, every command that resolves a unit config looked the working folder up and died with a traceback; a
relative path that does need it is now one error line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

RUN_TIMEOUT_S = 120


def from_a_deleted_folder(folder: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``python -m edge ARGS`` started in ``folder``, which is removed just before the interpreter starts."""
    folder.mkdir()
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    return subprocess.run(["bash", "-c", script, "_", str(folder), sys.executable, "-m", "edge", *map(str, args)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)


def test_plan_and_run_work_from_a_deleted_working_folder(example_bundle: Path, example_labels: tuple[Path, Path],
                                                         toad_in_night: Path, tmp_path: Path) -> None:
    plan = from_a_deleted_folder(tmp_path / "gone1", "plan", "--profile", "raspberry-pi-5", "--date", "2025-06-21")
    assert plan.returncode == 0 and "card full after" in plan.stdout, plan.stderr
    args = ["run", "--bundle", example_bundle, "--labels", example_labels[0], "--input", toad_in_night, "--fast",
            "--threshold", "0", "--log-dir", tmp_path / "card"]
    relative = from_a_deleted_folder(tmp_path / "gone2", *args)  # the default fallback folder is relative
    assert relative.returncode == 2 and "Traceback" not in relative.stderr, relative.stderr
    assert "storage.fallback_dir" in relative.stderr and "working folder, which no longer exists" in relative.stderr
    run = from_a_deleted_folder(tmp_path / "gone3", *args, "--set", f"storage.fallback_dir={tmp_path / 'unwritten'}")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert list((tmp_path / "card").rglob("detections*")), "the run wrote no detections"
