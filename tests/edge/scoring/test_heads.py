"""Few-shot heads: scored as linear logits on the unit, trained at the desk, beating the prototype on held-out audio."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from desk.review.train_head import TrainingSet, fit_head, install_head
from edge.model.bundle import open_bundle
from edge.model.examples import embed_recordings
from edge.scoring.heads import head_names, load_head
from edge.scoring.labels import read_labels
from edge.scoring.scorer import LabelSet, Scorer, load_label_set
from tests.conftest import TOAD, load_48k

RATE = 48_000
CHORUS = "kitzeslab__opensoundscape/1min.wav"


def test_scorer_scores_a_head_as_its_logit_next_to_text_labels() -> None:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(2, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    weights = rng.normal(size=(1, 16)).astype(np.float32) * 3
    labels = LabelSet(("a", "b"), text).with_head(LabelSet(("head",), weights, np.array([0.7], np.float32)))
    x = rng.normal(size=(5, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = Scorer(labels, logit_scale=20.0).score(x)
    np.testing.assert_allclose(scores.score[:, :2], (x @ text.T) * 20.0, rtol=1e-5)
    np.testing.assert_allclose(scores.score[:, 2], x @ weights[0] + 0.7, rtol=1e-5)
    np.testing.assert_allclose(scores.cosine[:, 2], x @ weights[0] / np.linalg.norm(weights[0]), rtol=1e-5)


TOAD_GAIN_DB = -16.0
"""Toad trill level against the dawn chorus: quiet enough that the chorus dominates the prototype direction."""


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)))


def _mixes(chorus: np.ndarray, toad: np.ndarray | None, pairs: list[tuple[int, int]], folder: Path,
           stem: str) -> list[Path]:
    """10 s files: chorus from second ``c`` plus (optionally) toad from second ``t``, at TOAD_GAIN_DB."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c, t in pairs:
        background = chorus[c * RATE:(c + 10) * RATE]
        mix = background / _rms(background) * 0.05
        if toad is not None:
            call = toad[t * RATE:(t + 10) * RATE]
            mix = mix + call / _rms(call) * 0.05 * 10 ** (TOAD_GAIN_DB / 20)
        path = folder / f"{stem}_{c:02d}_{t:02d}.wav"
        sf.write(path, mix, RATE)
        paths.append(path)
    return paths


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(positive, scores))


def test_head_beats_the_prototype_on_held_out_windows(tiny_bundle: Path, shared_audio: Path, tmp_path: Path) -> None:
    """A toad trill buried in a dawn chorus: training and held-out windows come from disjoint seconds of both."""
    bundle = open_bundle(tiny_bundle)
    toad = load_48k(shared_audio / TOAD)
    chorus = load_48k(shared_audio / CHORUS)
    train_pos = embed_recordings(bundle, _mixes(chorus, toad, list(zip(range(0, 30, 3), range(0, 20, 2))),
                                                tmp_path / "train", "toad"))
    train_neg = embed_recordings(bundle, _mixes(chorus, None, [(c, 0) for c in range(1, 30, 3)], tmp_path / "train",
                                                "chorus"))
    test_pos = embed_recordings(bundle, _mixes(chorus, toad, list(zip(range(32, 50, 3), range(26, 34))),
                                               tmp_path / "test", "toad"))
    test_neg = embed_recordings(bundle, _mixes(chorus, None, [(c, 0) for c in range(33, 50, 3)], tmp_path / "test",
                                               "chorus"))
    data = TrainingSet("toad", np.concatenate([train_pos, train_neg]),
                       np.r_[np.ones(len(train_pos), bool), np.zeros(len(train_neg), bool)])
    fit = fit_head(data, zero_shot=None)
    held_out = np.concatenate([test_pos, test_neg])
    truth = np.r_[np.ones(len(test_pos), bool), np.zeros(len(test_neg), bool)]
    prototype = train_pos.mean(axis=0)
    ap_prototype = _average_precision(held_out @ (prototype / np.linalg.norm(prototype)), truth)
    ap_head = _average_precision(held_out @ fit.weights + fit.bias, truth)
    print(f"held-out AP: head {ap_head:.3f}, prototype {ap_prototype:.3f} "
          f"({len(test_pos)} toad-in-chorus / {len(test_neg)} chorus windows, toad at {TOAD_GAIN_DB:g} dB)")
    assert ap_head > ap_prototype
    assert ap_head >= 0.9


def test_installed_head_is_scored_by_analyze(example_bundle: Path, example_labels: tuple[Path, Path],
                                             toad_in_night: Path, tmp_path: Path) -> None:
    from desk.review.train_head import HeadFit
    from edge.cli import app

    bundle_copy = Path(shutil.copytree(example_bundle, tmp_path / "bundle"))
    bundle = open_bundle(bundle_copy)
    toad_row = load_label_set(bundle, read_labels(example_labels[0])).embeddings[0]
    scores = embed_recordings(bundle, [toad_in_night]) @ toad_row
    # Halfway between the quietest and the loudest window: the silent windows score exactly alike, so a median
    # would put the threshold on them (logit 0 ± rounding), not between windows.
    centre = float(scores.min() + scores.max()) / 2
    fit = HeadFit("toad head", 50 * toad_row, -50 * centre, 10, 10, 5, 0.9, 0.9, 0.5, 0.5)  # fires on the toad's
    install_head(bundle, "frogs", [fit], {"review": "test"})
    reopened = open_bundle(bundle_copy)  # checksums verified
    assert head_names(reopened) == ["frogs"]
    assert load_head(reopened, "frogs").names == ("toad head",)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "analyze", str(toad_in_night), "--labels", str(example_labels[0]), "--bundle", str(bundle_copy),
        "--out", str(out), "--top-k", "3", "--head", "frogs"])
    assert result.exit_code == 0, result.output
    with open(out / "detections.csv", encoding="utf-8") as handle:
        every = list(csv.DictReader(handle))
    rows = [r for r in every if r["label"] == "toad head"]
    windows = {r["start_s"] for r in every}
    assert 0 < len(rows) < len(windows), "the head's default threshold (logit 0, P = 0.5) should keep some windows"
    assert all(float(r["score"]) >= 0 for r in rows)
    missing = CliRunner().invoke(app, [
        "analyze", str(toad_in_night), "--labels", str(example_labels[0]), "--bundle", str(bundle_copy),
        "--out", str(out), "--head", "nope"])
    assert missing.exit_code != 0 and "no head 'nope'" in missing.output and "hint:" in missing.output
