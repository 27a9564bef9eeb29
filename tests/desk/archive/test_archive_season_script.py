"""benchmarks/archive_season.py reports what the archive holds, whatever a run of it added."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "archive_season.py"


def script(*args: str) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True).stdout


def test_a_re_collect_reports_the_archives_bytes_per_window(tmp_path: Path) -> None:
    work = tmp_path / "season"
    report = tmp_path / "report.json"
    script("--windows", "600", "--units", "2", "--workdir", str(work), "--phases", "write,collect", "--json",
          str(report))
    first = json.loads(report.read_text())["collect"]
    again = json.loads(script("--phase", "collect", "--workdir", str(work)).splitlines()[-1])  # the same cards again
    assert (first["windows_added"], first["windows_archived"]) == (600, 600)
    assert (again["windows_added"], again["windows_archived"]) == (0, 600)
    assert again["shard_bytes_per_window"] == first["shard_bytes_per_window"]
    assert 1_024 < first["shard_bytes_per_window"] < 1_200  # 512 float16 values a window, and the file around them


def test_the_search_phase_runs_on_an_archive_of_fewer_than_four_units(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    script("--windows", "300", "--units", "2", "--workdir", str(tmp_path / "season"), "--phases",
           "write,collect,search", "--no-recall", "--json", str(report))
    search = json.loads(report.read_text())["search"]
    assert search["one_unit_s"] > 0  # the one-unit query ran on an archived unit (it named unit-03 before)
