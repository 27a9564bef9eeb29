"""Stage-by-stage verification on held-out recordings, its gates, and edge refusing unproven precisions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edge.cli import app as edge_app
from export.cli import app as export_app
from export.fidelity import PRECISION_GATES, fidelity

runner = CliRunner()


def test_reduced_precisions_pass_their_gates_on_held_out_recordings(precision_bundle: Path) -> None:
    report = json.loads((precision_bundle / "parity.json").read_text())
    for key, gate in (("fp16", PRECISION_GATES["fp16"]), ("int8", PRECISION_GATES["int8"]),
                      ("int8-trt", PRECISION_GATES["int8"])):
        stage = report["stages"][report["models"][key]["stage"]]
        assert stage["windows"] >= 10 and stage["labels"] >= 8
        assert stage["mean_centred_cosine"] >= gate.min_centred_cosine, key
        assert stage["top1_agreement"] >= gate.min_top1, key
        assert report["models"][key]["passed"]


def test_centred_cosine_sees_damage_that_raw_cosine_hides() -> None:
    rng = np.random.default_rng(0)
    shared = rng.normal(size=64)
    reference = shared + 0.05 * rng.normal(size=(50, 64))
    damaged = shared + 0.05 * rng.normal(size=(50, 64))  # window-specific part replaced by noise
    result = fidelity(reference, damaged, None)
    assert result.mean_cosine > 0.99 and result.mean_centred_cosine < 0.5


def test_failed_or_missing_report_is_refused_unless_forced(tiny_bundle: Path, precision_audio: tuple[Path, Path],
                                                           calibration_dir: Path, example_labels: tuple[Path, Path],
                                                           toad_in_night: Path, tmp_path: Path) -> None:
    from tests.conftest import add_file_labels

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))  # random weights: INT8 damage is visible
    add_file_labels(bundle, precision_audio[0], tmp_path / "labels")
    labels = tmp_path / "labels" / "labels.txt"
    quantized = runner.invoke(export_app, ["quantize", "--bundle", str(bundle), "--calibration",
                                           str(calibration_dir)])
    assert quantized.exit_code == 0, quantized.output
    analyze = ["analyze", str(toad_in_night), "--labels", str(labels), "--bundle", str(bundle), "--out",
               str(tmp_path / "out"), "--precision", "int8"]
    missing = runner.invoke(edge_app, analyze)
    assert missing.exit_code == 2 and "has no parity report" in missing.output

    verified = runner.invoke(export_app, ["verify", "--bundle", str(bundle), "--audio", str(precision_audio[1])])
    assert verified.exit_code == 1 and "FAIL ort_fp32->ort_int8" in verified.output
    failed = runner.invoke(edge_app, analyze)
    assert failed.exit_code == 2 and "failed its parity gates" in failed.output
    forced = runner.invoke(edge_app, [*analyze, "--force-precision"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "out" / "detections.csv").is_file()


def test_top1_counts_a_reference_near_tie_as_agreement_but_not_a_clear_flip() -> None:
    labels = np.eye(3)
    reference = np.array([[0.70, 0.6985, 0.1], [0.70, 0.50, 0.1]])  # gap 0.0015 in a 0.6 range: a tie
    flipped = np.array([[0.6985, 0.70, 0.1], [0.50, 0.70, 0.1]])
    result = fidelity(reference, flipped, labels)
    assert result.top1_exact == 0.0
    assert result.top1_agreement == 0.5  # the near-tie window agrees, the clear flip does not
