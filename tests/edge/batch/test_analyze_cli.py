"""`biolingual-edge analyze`: outputs, bad files, bad options, and no torch on the unit."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from tests.conftest import REPO

runner = CliRunner()


def analyze(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["analyze", *args])
    return result.exit_code, result.output


def test_bad_file_is_reported_and_the_rest_analysed(example_bundle: Path, example_labels: tuple[Path, Path],
                                                    shared_audio: Path, tmp_path: Path) -> None:
    recordings = tmp_path / "card"
    recordings.mkdir()
    (recordings / "20240601_050000.WAV").write_bytes(
        (shared_audio / "nilomr__pykanto/20210502_040000.WAV").read_bytes())
    (recordings / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    out = tmp_path / "out"
    code, output = analyze(str(recordings), "--labels", str(example_labels[0]), "--bundle", str(example_bundle),
                           "--out", str(out), "--top-k", "2")
    assert code == 1
    assert "broken.wav" in output and "Traceback" not in output
    with open(out / "detections.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["rank"], r["start_s"], r["end_s"]) for r in rows] == [("1", "0.000", "0.981"), ("2", "0.000", "0.981")]
    assert {r["label"] for r in rows} == {"toad", "night"}
    # the AudioMoth comment inside the file ("Recorded at 04:00:00 02/05/2021 (UTC)") wins over its new name
    assert rows[0]["start_utc"] == "2021-05-02T04:00:00+00:00"
    raven = (out / "20240601_050000.BioLingual.selection.table.txt").read_text().splitlines()
    assert raven[0].startswith("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)")
    assert len(raven) == 3


def test_threshold_drops_low_scores(example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path,
                                    tmp_path: Path) -> None:
    args = [str(toad_in_night), "--labels", str(example_labels[0]), "--bundle", str(example_bundle)]
    analyze(*args, "--out", str(tmp_path / "all"), "--top-k", "2")
    with open(tmp_path / "all" / "detections.csv", encoding="utf-8") as handle:
        scores = sorted(float(r["score"]) for r in csv.DictReader(handle))
    cut = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    code, _ = analyze(*args, "--out", str(tmp_path / "some"), "--top-k", "2", "--threshold", str(cut))
    assert code == 0
    with open(tmp_path / "some" / "detections.csv", encoding="utf-8") as handle:
        kept = [float(r["score"]) for r in csv.DictReader(handle)]
    assert len(kept) == len(scores) // 2 and min(kept) >= cut


@pytest.mark.parametrize(("extra", "message"), [
    (["--hop", "12"], "--hop 12 s must be > 0 and <= --window"),
    (["--window", "30"], "--window 30 s is outside 0..10 s"),
])
def test_bad_timing_options_are_one_line(example_bundle: Path, example_labels: tuple[Path, Path],
                                         toad_in_night: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    code, output = analyze(str(toad_in_night), "--labels", str(example_labels[0]), "--bundle", str(example_bundle),
                           "--out", str(tmp_path), *extra)
    assert code == 2 and message in output and "Traceback" not in output


def test_missing_bundle_and_empty_labels(example_labels: tuple[Path, Path], toad_in_night: Path,
                                         example_bundle: Path, tmp_path: Path) -> None:
    code, output = analyze(str(toad_in_night), "--labels", str(example_labels[0]), "--bundle",
                           str(tmp_path / "nope"), "--out", str(tmp_path))
    assert code == 2 and "manifest.json is missing" in output
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    code, output = analyze(str(toad_in_night), "--labels", str(empty), "--bundle", str(example_bundle),
                           "--out", str(tmp_path))
    assert code == 2 and "has no labels" in output


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'ray', 'pyarrow', 'duckdb'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from edge.cli import app
app(prog_name='biolingual-edge')
"""


def test_edge_runs_with_torch_unimportable(example_bundle: Path, example_labels: tuple[Path, Path],
                                           toad_in_night: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "analyze", str(toad_in_night), "--labels", str(example_labels[0]),
         "--bundle", str(example_bundle), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "1 file(s) analysed, 11 detection(s)" in result.stderr


def test_analyze_runs_one_window_per_inference_call_by_default() -> None:
    """Batch 1 is the cheapest per window on CPUs (BENCHMARKS.md, *INT8 on Intel Xeon*); the CLI and the
    library agree on it, so a library caller gets the same plan (pieces are whole batches) as the command."""
    import typer.main

    from edge.batch.piece_analysis import AnalyzeOptions

    command = typer.main.get_command(app)
    analyze_command = command.get_command(None, "analyze")  # type: ignore[attr-defined]
    batch = next(p for p in analyze_command.params if p.name == "batch")
    assert batch.default == AnalyzeOptions().batch == 1
