"""review → (a person in a real browser) → fit-confidence → install → analyze, on an archive of real recordings."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from desk.collect.ingest import collect
from desk.review.page import stratified_sample
from edge.batch.analyze import AnalyzeOptions, analyze_paths
from edge.cli import app

PER_LABEL = 12


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_stratified_sample_spreads_across_score_bins() -> None:
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 0.3, 990), rng.uniform(8, 10, 10)]  # few high scores, as in a real soundscape
    picked = stratified_sample(scores, 20, 5, rng)
    assert len(picked) == 20 and len(set(picked.tolist())) == 20
    assert (scores[picked] > 8).sum() == 10, "every rare high-scoring window is drawn before more low ones"
    assert stratified_sample(scores[:3], 20, 5, rng).size == 3


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path, example_labels: tuple[Path, Path],
            toad_in_night: Path, shared_audio: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("review")
    bundle = Path(shutil.copytree(example_bundle, root / "bundle"))
    recordings = [toad_in_night.resolve(), (shared_audio / "kitzeslab__opensoundscape/great_plains_toad.wav")]
    analyze_paths(recordings, example_labels[0], bundle, root / "analyze",
                  AnalyzeOptions(hop_s=2.5, embeddings_dir=root / "card"))
    db = root / "season.duckdb"
    collect([root / "card"], db)
    out = root / "out"
    cli("logs", "review", "--db", str(db), "--bundle", str(bundle), "--labels", str(example_labels[0]),
        "--per-label", str(PER_LABEL), "--out", str(out))
    return {"root": root, "db": db, "bundle": bundle, "out": out, "labels": example_labels[0],
            "recording": toad_in_night}


def test_review_csv_samples_each_label_with_audio_references(archive: dict[str, Path]) -> None:
    with open(archive["out"] / "review.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for label in ("toad", "night"):
        mine = [r for r in rows if r["label"] == label]
        assert len(mine) == PER_LABEL
        assert all(r["verdict"] == "" and r["source_path"] and r["audio"] for r in mine)
        scores = sorted(float(r["score"]) for r in mine)
        assert scores[-1] > scores[0]


def test_scripted_review_in_chromium_feeds_calibrate_and_analyze(archive: dict[str, Path], browser: Any,
                                                                  tmp_path: Path) -> None:
    page = browser.new_page(accept_downloads=True)
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto((archive["out"] / "review.html").as_uri())
    items = page.locator("section.item")
    assert items.count() == 2 * PER_LABEL
    # The reviewer's rule: a toad window is right when it scores in the upper half; night is never right.
    scores = [(label, float(score)) for label, score in
              page.eval_on_selector_all("section.item", "els => els.map(e => [e.querySelector('b').textContent, "
                                                        "e.querySelector('.score').textContent])")]
    toad_median = float(np.median([s for label, s in scores if label == "toad"]))
    for index, (label, score) in enumerate(scores):
        page.keyboard.press("y" if label == "toad" and score >= toad_median else "n")
        if index == 0:
            page.keyboard.press("k")  # go back and change the first verdict: the last key wins
            page.keyboard.press("y" if label == "toad" and score >= toad_median else "n")
    assert page.locator("#progress").text_content() == f"{2 * PER_LABEL} / {2 * PER_LABEL} reviewed"
    # every window visited has its audio (Opus at the model's rate) and spectrogram attached
    sources = page.eval_on_selector_all("audio", "els => els.map(e => e.getAttribute('src'))")
    assert len(sources) == 2 * PER_LABEL and all(s.startswith("data:audio/ogg;base64,") for s in sources)
    assert page.eval_on_selector_all("img", "els => els.every(e => e.complete && e.naturalWidth > 0)")
    with page.expect_download() as download:
        page.click("#download")
    filled = tmp_path / "review.csv"
    download.value.save_as(filled)
    page.close()
    assert errors == [] and requests == []
    with open(filled, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["verdict"] for r in rows if r["label"] == "night"} == {"no"}
    assert sum(r["verdict"] == "yes" for r in rows) == sum(1 for label, s in scores
                                                           if label == "toad" and s >= toad_median)
    confidence = tmp_path / "confidence.json"
    output = cli("logs", "fit-confidence", "--review", str(filled), "--out", str(confidence), "--bootstrap", "100",
                 "--install", str(archive["bundle"]))
    assert "night: not fitted" in output
    out = tmp_path / "analyze"
    cli("analyze", str(archive["recording"]), "--labels", str(archive["labels"]), "--bundle", str(archive["bundle"]),
        "--out", str(out), "--hop", "2.5")
    with open(out / "detections.csv", encoding="utf-8") as handle:
        toad = [r for r in csv.DictReader(handle) if r["label"] == "toad"]
    assert toad and all(r["p_correct"] and float(r["p_correct"]) >= 0.9 - 1e-3 for r in toad)
    rescored = tmp_path / "rescore"
    cli("logs", "rescore", "--db", str(archive["db"]), "--bundle", str(archive["bundle"]), "--labels",
        str(archive["labels"]), "--out", str(rescored))
    with open(rescored / "detections.csv", encoding="utf-8") as handle:
        rescore_rows = list(csv.DictReader(handle))
    rescore_toad = [r for r in rescore_rows if r["label"] == "toad"]
    assert rescore_toad and all(float(r["p_correct"]) >= 0.9 - 1e-3 for r in rescore_toad)
    assert all(r["p_correct"] == "" for r in rescore_rows if r["label"] == "night")


def test_train_head_learns_from_the_reviewed_windows_it_reads_from_the_archive(archive: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    from desk.archive.windows import open_store
    from edge.model.bundle import open_bundle
    from edge.scoring.scorer import HEAD_SOURCE

    with open(archive["out"] / "review.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] == "toad"]
    median = float(np.median([float(r["score"]) for r in rows]))
    for row in rows:
        row["verdict"] = "yes" if float(row["score"]) >= median else "no"
    filled = tmp_path / "review.csv"
    with open(filled, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    bundle = Path(shutil.copytree(archive["bundle"], tmp_path / "bundle"))
    yes = sorted(int(r["window_id"]) for r in rows if r["verdict"] == "yes")
    no = sorted(int(r["window_id"]) for r in rows if r["verdict"] == "no")
    output = cli("logs", "train-head", "--db", str(archive["db"]), "--review", str(filled), "--bundle", str(bundle),
                 "--name", "marsh")
    assert f"toad: {len(yes)} pos / {len(no)} neg" in output
    (entry,) = [e for e in open_bundle(bundle).manifest.label_sets.values() if e.source == HEAD_SOURCE]
    head = np.load(bundle / entry.path)
    with open_store(archive["db"]) as store:  # the head separates exactly the windows reviewed, by their id
        logits = store.embeddings(yes + no) @ head["embeddings"][0] + head["bias"][0]
    assert (logits[: len(yes)] > 0).all() and (logits[len(yes):] < 0).all()
