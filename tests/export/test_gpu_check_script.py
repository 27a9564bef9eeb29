"""scripts/gpu_check.sh on a machine without a GPU: a JSON report that says what it could not run, exit 3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is here: run the script itself")
def test_without_a_gpu_the_report_lists_every_check_as_not_run(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 3, done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["summary"] == {"passed": 0, "failed": 0, "not_run": 2}
    assert {s["step"] for s in report["steps"]} == {"cuda_buffers", "tensorrt_path"}
    assert any("tensorrt" in line for line in report["not_run"])
    assert report["environment"]["gpu"].startswith("no nvidia-smi")
