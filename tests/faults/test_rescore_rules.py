"""``logs rescore`` applies what the unit applies: the installed confidence only in its own score mode, and with
``--config`` the unit's fitted thresholds and heads; flags that contradict the config are refused, not ignored."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from desk.review.confidence import install_confidence
from edge.model.bundle import open_bundle
from edge.model.space import embedding_space
from edge.scoring.labels import read_labels
from tests.faults.conftest import refused, run_cli

UNREACHABLE = 1e6
"""A fitted threshold no score reaches."""


def install_toad_threshold(bundle: Path, labels: Path, threshold: float, mode: str = "logit") -> None:
    """Install a confidence whose only fitted label, toad, has ``threshold`` at target precision 0.9."""
    fit = {"fitted": True, "a": -1.0, "b": 0.5, "thresholds": {"0.9": {"score": threshold, "ci": [0, 0]}}}
    install_confidence(bundle, {"schema": 1, "model_sha256": embedding_space(open_bundle(bundle)),
                                "labels_key": read_labels(labels).key, "score_mode": mode, "target": "0.9",
                                "targets": ["0.9"], "labels": {"toad": fit}})


def labels_of(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row["label"] for row in csv.DictReader(handle)]


def test_a_confidence_of_another_score_mode_is_refused(spaces_season: dict[str, Path], bundle_a: Path,
                                                       example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    install_toad_threshold(bundle_a, example_labels[0], 0.0)
    base = ["logs", "rescore", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", example_labels[0],
            "--out", tmp_path]
    refused(run_cli(*base, "--score-mode", "softmax"), "fitted on logit scores", "--score-mode logit")
    assert run_cli(*base, "--score-mode", "logit").exit_code == 0


@pytest.fixture
def unit_config(tmp_path: Path, bundle_a: Path, example_labels: tuple[Path, Path]) -> Path:
    config = tmp_path / "unit.yaml"
    config.write_text(f"unit:\n  unit_id: marsh-01\nmodel:\n  bundle: {bundle_a}\nanalysis:\n"
                      f"  labels: {example_labels[0]}\n  score_mode: logit\n  threshold: -1000\n  hysteresis: 0.5\n",
                      encoding="utf-8")
    return config


def test_rescore_config_uses_the_units_fitted_thresholds(spaces_season: dict[str, Path], bundle_a: Path,
                                                         example_labels: tuple[Path, Path], unit_config: Path,
                                                         tmp_path: Path) -> None:
    base = ["logs", "rescore", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", example_labels[0],
            "--config", unit_config]
    assert run_cli(*base, "--out", tmp_path / "plain").exit_code == 0
    assert "toad" in labels_of(tmp_path / "plain" / "detections.csv")  # every score passes the global threshold
    install_toad_threshold(bundle_a, example_labels[0], UNREACHABLE)
    fitted = run_cli(*base, "--out", tmp_path / "fitted")
    assert fitted.exit_code == 0, fitted.output
    got = labels_of(tmp_path / "fitted" / "detections.csv")
    assert "toad" not in got and "night" in got  # the unit would log no toad: its fitted threshold is unreachable
    with open(unit_config, "a", encoding="utf-8") as handle:  # the config's own threshold wins, as on the unit
        handle.write("  label_thresholds:\n    toad: -1000\n")
    own = run_cli(*base, "--out", tmp_path / "own")
    assert own.exit_code == 0, own.output
    assert labels_of(tmp_path / "own" / "detections.csv") == labels_of(tmp_path / "plain" / "detections.csv")


def test_rescore_config_refuses_flags_that_contradict_it(spaces_season: dict[str, Path], bundle_a: Path,
                                                         example_labels: tuple[Path, Path], unit_config: Path,
                                                         tmp_path: Path) -> None:
    base = ["logs", "rescore", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", example_labels[0],
            "--config", unit_config, "--out", tmp_path]
    refused(run_cli(*base, "--threshold", "3"), "--threshold 3", "conflicts with the unit config")
    refused(run_cli(*base, "--score-mode", "softmax"), "--score-mode softmax", "conflicts")
    assert run_cli(*base, "--score-mode", "logit", "--threshold", "-1000").exit_code == 0  # agreeing is fine
