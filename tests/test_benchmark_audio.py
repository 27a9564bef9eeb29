"""The benchmarks find the field recordings as the tests do: ``$BIOLINGUAL_SHARED_AUDIO``, else ``shared/audio``
beside the repository, else one line naming where they looked and a hint (not a traceback deep in a run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import shared_audio as module

REPO = Path(__file__).resolve().parents[1]


def test_the_variable_wins_over_the_folder_beside_the_repository(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    beside = tmp_path / "repo"
    (tmp_path / "shared" / "audio").mkdir(parents=True)
    monkeypatch.setattr(module, "REPO", beside)
    monkeypatch.delenv(module.VARIABLE, raising=False)
    assert module.shared_audio() == tmp_path / "shared" / "audio"
    monkeypatch.setenv(module.VARIABLE, str(tmp_path))
    assert module.shared_audio() == tmp_path


def test_no_folder_is_one_line_naming_where_it_looked_and_a_hint(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "REPO", tmp_path / "worktree")
    monkeypatch.delenv(module.VARIABLE, raising=False)
    with pytest.raises(SystemExit) as beside:
        module.shared_audio()
    assert str(beside.value).splitlines() == [
        f"error: no folder of field recordings at {tmp_path / 'shared' / 'audio'}",
        "hint: pass --audio DIR, or set BIOLINGUAL_SHARED_AUDIO to the recordings' folder"]
    monkeypatch.setenv(module.VARIABLE, str(tmp_path / "missing"))
    with pytest.raises(SystemExit) as named:
        module.shared_audio()
    missing = tmp_path / "missing"
    assert str(named.value).splitlines()[0] == f"error: no folder of field recordings at {module.VARIABLE}={missing}"


SCRIPTS = [("compare_baseline.py", ["--cache"]), ("non_model_cost.py", ["--bundle"]),
           ("analyze_scale.py", ["--workdir"]), ("boot_time.py", ["--workdir"]), ("daemon_fast.py", ["--workdir"]),
           ("daemon_memory.py", ["--workdir"]), ("precision_cpu.py", ["--workdir"]),
           ("text_encoder.py", ["--workdir"]), ("train_reference.py", ["--workdir"]),
           ("cluster_scale.py", ["--workdir"]), ("ann_candidates.py", ["--real", "--workdir"]),
           ("archive_season.py", ["--phases", "write,naive", "--workdir"]), ("report_season.py", ["--workdir"])]
"""Every benchmark that reads the field recordings, and the arguments that end with the folder its work goes to."""


@pytest.mark.parametrize("script, args", SCRIPTS)
def test_the_scripts_stop_with_that_line_before_any_work(script: str, args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, module.VARIABLE: str(tmp_path / "missing"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, str(tmp_path / "x")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: no folder of field recordings at BIOLINGUAL_SHARED_AUDIO={tmp_path / 'missing'}",
        "hint: pass --audio DIR, or set BIOLINGUAL_SHARED_AUDIO to the recordings' folder"]
    assert not (tmp_path / "x").exists()  # stopped before any work (no cache folder made)
