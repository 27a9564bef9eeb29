"""Per-label confidence: the logistic fit recovers known parameters, and labels it cannot fit are reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from desk.review.confidence import (
    MIN_VERDICTS,
    ReviewFile,
    Verdict,
    fit_confidence,
    fit_logistic,
    read_review,
    threshold_at,
)
from edge.errors import ConfigError
from edge.scoring.confidence import parse_confidence

TRUE_A, TRUE_B = -6.0, 0.5
"""P(correct) = sigmoid(-6 + 0.5·score): 50 % at score 12, 90 % at 16.4."""


def synthetic_verdicts(label: str, n: int, rng: np.random.Generator, a: float = TRUE_A,
                       b: float = TRUE_B) -> list[Verdict]:
    scores = rng.uniform(0, 25, n)
    correct = rng.random(n) < 1 / (1 + np.exp(-(a + b * scores)))
    return [Verdict(label, float(s), "yes" if c else "no") for s, c in zip(scores, correct)]


def test_fit_recovers_known_logistic_parameters() -> None:
    rng = np.random.default_rng(7)
    verdicts = synthetic_verdicts("toad", 4000, rng)
    x = np.array([v.score for v in verdicts])[None]
    y = np.array([v.verdict == "yes" for v in verdicts], dtype=float)[None]
    a, b = fit_logistic(x, y)
    # Standard errors at n = 4000 are about 0.2 (a) and 0.015 (b); the tolerances are ~2.5 of them.
    assert abs(a[0] - TRUE_A) < 0.5
    assert abs(b[0] - TRUE_B) < 0.04


def test_threshold_for_target_precision_has_an_interval_around_the_truth() -> None:
    rng = np.random.default_rng(3)
    review = ReviewFile(tuple(synthetic_verdicts("toad", 600, rng)), "key", "sha", "logit")
    result = fit_confidence(review, [0.9, 0.95], replicates=400)
    entry = result["labels"]["toad"]
    assert entry["fitted"]
    for target in ("0.9", "0.95"):
        truth = float(threshold_at(TRUE_A, TRUE_B, float(target)))
        low, high = entry["thresholds"][target]["ci"]
        assert low < entry["thresholds"][target]["score"] < high
        assert low - 0.5 < truth < high + 0.5
    assert entry["thresholds"]["0.9"]["score"] < entry["thresholds"]["0.95"]["score"]
    cal = parse_confidence(result)
    assert cal.target == "0.9"
    p = cal.labels["toad"].p_correct(np.array([entry["thresholds"]["0.9"]["score"]]))
    assert p[0] == pytest.approx(0.9, abs=1e-6)


def test_labels_that_cannot_be_fitted_are_reported_not_fitted() -> None:
    rng = np.random.default_rng(0)
    few = synthetic_verdicts("rare", MIN_VERDICTS - 1, rng)
    no_positives = [Verdict("silent", float(s), "no") for s in rng.uniform(0, 25, 50)]
    falling = synthetic_verdicts("backwards", 300, rng, a=6.0, b=-0.5)
    unsure = [Verdict("rare", 3.0, "unsure")]
    result = fit_confidence(ReviewFile(tuple(few + no_positives + falling + unsure), "k", "s", "logit"), replicates=50)
    labels = result["labels"]
    assert not labels["rare"]["fitted"] and "verdicts" in labels["rare"]["reason"]
    assert labels["rare"]["n_unsure"] == 1
    assert not labels["silent"]["fitted"] and "0 yes" in labels["silent"]["reason"]
    assert not labels["backwards"]["fitted"] and "does not rise" in labels["backwards"]["reason"]
    assert parse_confidence(result).labels == {}


def test_review_file_with_an_unknown_verdict_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "review.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["window_id", "label", "score", "verdict", "labels_key", "model_sha256"])
        writer.writerow([1, "toad", "3.5", "yes", "k", "s"])
        writer.writerow([2, "toad", "1.5", "maybe", "k", "s"])
    with pytest.raises(ConfigError, match="line 3: verdict 'maybe'"):
        read_review(path)


def test_calibrate_cli_writes_json_and_one_line_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    rng = np.random.default_rng(5)
    path = tmp_path / "review.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["window_id", "label", "score", "verdict", "labels_key", "model_sha256", "score_mode"])
        for number, v in enumerate(synthetic_verdicts("toad", 300, rng)):
            writer.writerow([number, v.label, v.score, v.verdict, "k", "", "logit"])
    out = tmp_path / "confidence.json"
    result = CliRunner().invoke(app, ["logs", "fit-confidence", "--review", str(path), "--out", str(out),
                                      "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["labels"]["toad"]["fitted"]
    bad = CliRunner().invoke(app, ["logs", "fit-confidence", "--review", str(path), "--out", str(out),
                                   "--target-precision", "0.9,high"])
    assert bad.exit_code != 0 and "hint:" in bad.output and "Traceback" not in bad.output


def _analyze(args: list[str]) -> list[dict[str, str]]:
    from typer.testing import CliRunner

    from edge.cli import app

    result = CliRunner().invoke(app, ["analyze", *args])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    with open(out / "detections.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_installed_calibration_sets_per_label_thresholds_and_p_correct(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    import shutil

    from desk.review.confidence import install_confidence
    from edge.model.bundle import open_bundle
    from edge.model.space import embedding_space as space_sha256
    from edge.scoring.labels import read_labels

    bundle = Path(shutil.copytree(example_bundle, tmp_path / "bundle"))
    base = [str(toad_in_night), "--labels", str(example_labels[0]), "--bundle", str(bundle), "--top-k", "2",
            "--hop", "2.5"]
    before = _analyze([*base, "--out", str(tmp_path / "before")])
    toad_scores = sorted(float(r["score"]) for r in before if r["label"] == "toad")
    cut = toad_scores[len(toad_scores) // 2]
    # Verdicts: a toad window is right exactly when it scores above the median; "night" is never reviewed.
    labels = read_labels(example_labels[0])
    review = tmp_path / "review.csv"
    with open(review, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["window_id", "label", "score", "verdict", "labels_key", "model_sha256", "score_mode"])
        for number, score in enumerate(toad_scores):
            writer.writerow([number, "toad", score, "yes" if score >= cut else "no", labels.key,
                             space_sha256(open_bundle(bundle)), "logit"])
    result = fit_confidence(read_review(review), [0.9], replicates=50)
    assert result["labels"]["toad"]["fitted"]
    threshold = result["labels"]["toad"]["thresholds"]["0.9"]["score"]
    install_confidence(bundle, result)
    open_bundle(bundle)  # the confidence is checksummed with the rest
    after = _analyze([*base, "--out", str(tmp_path / "after")])
    toad_after = [r for r in after if r["label"] == "toad"]
    assert {r["start_s"] for r in toad_after} == {r["start_s"] for r in before
                                                   if r["label"] == "toad" and float(r["score"]) >= threshold}
    assert 0 < len(toad_after) < len(toad_scores)
    for row in toad_after:
        assert float(row["p_correct"]) >= 0.9 - 1e-3
    night_before = [r["start_s"] for r in before if r["label"] == "night"]
    assert [r["start_s"] for r in after if r["label"] == "night"] == night_before  # uncalibrated: unchanged
    assert all(r["p_correct"] == "" for r in after if r["label"] == "night")


def test_run_uses_the_installed_calibration_and_heads(example_bundle: Path, example_labels: tuple[Path, Path],
                                                      toad_in_night: Path, tmp_path: Path) -> None:
    """The field daemon: a fitted label fires only at its fitted threshold; a head is scored too."""
    import shutil
    import subprocess
    import sys

    from desk.collect.cards import read_card
    from desk.review.confidence import install_confidence
    from desk.review.train_head import HeadFit, install_head
    from edge.model.bundle import open_bundle
    from edge.model.space import embedding_space as space_sha256
    from edge.scoring.labels import read_labels
    from edge.scoring.scorer import load_label_set

    bundle = Path(shutil.copytree(example_bundle, tmp_path / "bundle"))
    labels = read_labels(example_labels[0])
    before = _analyze([str(toad_in_night), "--labels", str(example_labels[0]), "--bundle", str(bundle), "--top-k",
                       "2", "--out", str(tmp_path / "before")])
    toad = sorted(float(r["score"]) for r in before if r["label"] == "toad")
    cut = toad[len(toad) // 2]
    review = ReviewFile(tuple(Verdict("toad", s, "yes" if s >= cut else "no") for s in toad * 3), labels.key,
                        space_sha256(open_bundle(bundle)), "logit")
    result = fit_confidence(review, [0.9], replicates=50)
    threshold = result["labels"]["toad"]["thresholds"]["0.9"]["score"]
    install_confidence(bundle, result)
    opened = open_bundle(bundle)
    toad_row = load_label_set(opened, labels).embeddings[0]
    install_head(opened, "frogs", [HeadFit("toad head", 50 * toad_row, 0.0, 10, 10, 5, 0.9, 0.9, 0.5, 0.5)], {})
    card = tmp_path / "card"
    done = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--labels", str(example_labels[0]), "--bundle", str(bundle),
         "--log-dir", str(card), "--input", str(toad_in_night), "--fast", "--threshold", "-1000",
         "--set", "analysis.heads=[frogs]"],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    table = read_card(card).detections
    cols = {name: i for i, name in enumerate(table.columns)}
    peaks = [(r[cols["label"]], float(r[cols["score"]])) for r in table.rows]
    assert any(label == "night" for label, _ in peaks)  # uncalibrated: the run's own (very low) threshold
    toad_peaks = [score for label, score in peaks if label == "toad"]
    assert toad_peaks and min(toad_peaks) >= threshold
    head_peaks = [score for label, score in peaks if label == "toad head"]
    assert head_peaks and min(head_peaks) >= 0  # scored next to the list; a head fires at P >= 0.5
