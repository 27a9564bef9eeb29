"""Season test 2: three units on shipped profiles with the user's own species list -> cards -> collect -> rescore
-> review (scripted verdicts) -> fit-confidence --install -> train-head -> `run --head` with the installed
confidence -> the unit's rows are the head's scores held to the applied thresholds, and run.json and the boot
manifests say which head, which confidence fit and which thresholds produced them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from desk.collect.cards import read_card
from desk.report.health import unit_scoring
from edge.card.embedformat import EMBEDDINGS_DIR, dequantise, read_embedding_segment
from edge.cli import app
from edge.model.bundle import open_bundle
from edge.scoring.confidence import confidence_path
from edge.scoring.heads import head_key
from edge.scoring.labels import read_labels
from tests.conftest import own_list_bundle, unit_card

runner = CliRunner()
PROFILES = ("raspberry-pi-4", "raspberry-pi-5", "generic-x86")
RECORDINGS = ("kitzeslab__opensoundscape/1min.wav",
              "BirdVox__birdvoxdetect/BirdVox-full-night_unit03_00-19-45_01min.wav",
              "kitzeslab__opensoundscape/great_plains_toad.wav")
"""One recording per unit (shared field recordings), renamed as AudioMoth names them."""


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def card_window_vectors(card: Path) -> dict[int, np.ndarray]:
    """start sample -> the window's embedding as the unit stored it (float32)."""
    vectors: dict[int, np.ndarray] = {}
    for path in sorted((card / EMBEDDINGS_DIR).glob("*")):
        segment = read_embedding_segment(path)
        assert segment.header is not None
        records = segment.records
        values = records["vector"].astype(np.float32) if segment.header.dtype == "fp16" else dequantise(records)
        vectors.update(zip((int(s) for s in records["start_sample"]), values))
    return vectors


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, tiny_checkpoint: Path,
           shared_audio: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("season2")
    bundle, labels = own_list_bundle(root, tiny_bundle, tiny_checkpoint)
    cards = []
    for day, (profile, source) in enumerate(zip(PROFILES, RECORDINGS), start=1):
        card = root / "cards" / f"u{day}"
        unit_card(shared_audio / source, root / "sd" / f"u{day}" / f"2024050{day}_210000.WAV", card, bundle, labels,
                  f"u{day}", profile)
        cards.append(card)
    db = root / "season.duckdb"
    cli("logs", "collect", *map(str, cards), "--into", str(db))
    return {"root": root, "bundle": bundle, "labels": labels, "db": db, "recording": root / "sd" / "u1" /
            "20240501_210000.WAV"}


def test_three_units_season_to_heads_and_confidence_back_on_a_unit(season: dict[str, Path]) -> None:
    root, bundle, labels, db = season["root"], season["bundle"], season["labels"], season["db"]
    names = read_labels(labels).names

    cli("logs", "rescore", "--db", str(db), "--bundle", str(bundle), "--labels", str(labels), "--out",
        str(root / "rescored"), "--top-k", "3")
    rescored = rows_of(root / "rescored" / "detections.csv")
    assert {r["label"] for r in rescored} == set(names)
    assert all(r["p_correct"] == "" for r in rescored)  # nothing fitted yet: empty, never nan

    cli("logs", "review", "--db", str(db), "--bundle", str(bundle), "--labels", str(labels), "--per-label", "30",
        "--out", str(root / "review"))
    review = rows_of(root / "review" / "review.csv")
    assert all(Path(r["source_path"]).is_file() for r in review)  # every reviewed window has its audio
    for label in names:  # the reviewer: the higher half of each label's scores are right
        mine = [r for r in review if r["label"] == label]
        cut = float(np.median([float(r["score"]) for r in mine]))
        for r in mine:
            r["verdict"] = "yes" if float(r["score"]) > cut else "no"
    filled = root / "review-done.csv"
    with open(filled, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(review[0]))
        writer.writeheader()
        writer.writerows(review)

    cli("logs", "fit-confidence", "--review", str(filled), "--out", str(root / "confidence.json"),
        "--target-precision", "0.9", "--install", str(bundle), "--bootstrap", "50")
    fitted = json.loads((root / "confidence.json").read_text(encoding="utf-8"))
    fitted_labels = {n for n, e in fitted["labels"].items() if e.get("fitted")}
    assert fitted_labels, {n: (e.get("reason"), e.get("n_yes"), e.get("n_no")) for n, e in fitted["labels"].items()}
    trained = cli("logs", "train-head", "--db", str(db), "--review", str(filled), "--bundle", str(bundle),
                  "--name", "frogs")
    assert "head 'frogs'" in trained

    opened = open_bundle(bundle)
    head_entry = opened.manifest.label_sets[head_key("frogs")]
    head = np.load(bundle / head_entry.path)
    assert set(head_entry.names) <= set(names)  # the head's labels are the list's own
    card = root / "cards" / "u1-head"
    cli("run", "--profile", "raspberry-pi-5", "--labels", str(labels), "--bundle", str(bundle), "--head", "frogs",
        "--log-dir", str(card), "--precision", "fp32", "--threshold", "-100", "--input", str(season["recording"]),
        "--fast", "--set", "unit.unit_id=u1", "--set", "storage.clips.mode='off'")

    (manifest,) = [json.loads(p.read_text(encoding="utf-8")) for p in (card / "boots").glob("*.json")]
    info = manifest["boot_info"]
    assert info["heads"] == [{"name": "frogs", "file": head_entry.path, "sha256": opened.manifest.files[
        head_entry.path], "labels": list(head_entry.names)}]
    list_fit = confidence_path(read_labels(labels).key)
    kept_fits = fitted_labels - set(head_entry.names)  # a head's label is not held to the zero-shot fit
    applied = info["thresholds_applied"]
    assert applied["global"] == -100
    for name in head_entry.names:
        assert applied[name] == 0.0  # a head fires at P >= 0.5
    for name in kept_fits:
        assert applied[name] == pytest.approx(fitted["labels"][name]["thresholds"]["0.9"]["score"])
    if kept_fits:
        assert info["confidence"]["id"] == opened.manifest.files[list_fit][:16]

    detections = read_card(card).detections
    cols = {c: i for i, c in enumerate(detections.columns)}
    vectors = card_window_vectors(card)
    row_of = {n: i for i, n in enumerate(head_entry.names)}
    checked = 0
    for row in detections.rows:
        label, score = row[cols["label"]], float(row[cols["score"]])
        assert score >= applied.get(label, -100) - 1e-6
        if label in row_of:  # the row's score is the head's logit on that window, not the zero-shot score
            x = vectors[int(row[cols["peak_start_sample"]])]
            i = row_of[label]
            assert score == pytest.approx(float(x @ head["embeddings"][i] + head["bias"][i]), abs=0.05)
            checked += 1
    assert checked, "no detection of a head label"

    heads_db = root / "heads.duckdb"
    cli("logs", "collect", str(card), "--into", str(heads_db))
    with duckdb.connect(str(heads_db), read_only=True) as con:
        shown = unit_scoring(con)["u1"]
    assert f"heads frogs (sha256 {opened.manifest.files[head_entry.path][:12]})" in shown
    if kept_fits:
        assert f"confidence {info['confidence']['id']}" in shown

    analysed = root / "analysed"
    cli("analyze", str(season["recording"]), "--labels", str(labels), "--bundle", str(bundle), "--head", "frogs",
        "--out", str(analysed), "--threshold", "-100")
    record = json.loads((analysed / "run.json").read_text(encoding="utf-8"))
    assert record["scoring"]["heads"] == info["heads"]
    assert record["scoring"]["thresholds_applied"] == applied  # the unit and the desk hold labels to the same
    assert record["scoring"]["confidence"] == info["confidence"]
    cli("logs", "rescore", "--db", str(db), "--bundle", str(bundle), "--labels", str(labels), "--out",
        str(root / "rescored-head"), "--head", "frogs", "--top-k", "3")
    rescored_head = rows_of(root / "rescored-head" / "detections.csv")
    assert {r["label"] for r in rescored_head} <= set(names)  # same columns: the head replaced, not added
