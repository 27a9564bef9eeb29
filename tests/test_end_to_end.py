"""The whole chain on the tiny checkpoint: export onnx -> labels -> analyze on real recordings."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from edge.cli import app as edge_app

runner = CliRunner()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_toad_spliced_at_40s_is_detected_only_in_windows_that_contain_it(
    example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path
) -> None:
    labels, _ = example_labels
    result = runner.invoke(edge_app, ["analyze", str(toad_in_night), "--labels", str(labels), "--bundle",
                                      str(example_bundle), "--out", str(tmp_path), "--window", "10", "--hop", "5"])
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "detections.csv")
    best = {float(r["start_s"]): r["label"] for r in rows if r["rank"] == "1"}
    assert sorted(best) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0]
    toad_windows = sorted(start for start, label in best.items() if label == "toad")
    assert toad_windows == [35.0, 40.0, 45.0]
