"""Season test: two seasons in two databases read as one archive (``--db`` repeated) -> review across both ->
fit-confidence -> rescore across both -> report, summary and export across both. What a user reads of the two
together is what the two give one by one: rows per recording and label, detections, units (a unit met in both
seasons is one recorder); a card collected into both is refused in one line."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from desk.archive.many import ID_BITS
from desk.archive.windows import open_store
from edge.cli import app
from edge.model.bundle import open_bundle
from edge.scoring.heads import head_key
from tests.conftest import OWN_LIST, own_list_bundle, unit_card

runner = CliRunner()
SEASONS = {"2024": (("u1", "kitzeslab__opensoundscape/great_plains_toad.wav", "20240501_210000.WAV"),
                    ("u2", "BirdVox__birdvoxdetect/BirdVox-full-night_unit03_00-19-45_01min.wav",
                     "20240502_210000.WAV")),
           "2025": (("u1", "kitzeslab__opensoundscape/great_plains_toad.wav", "20250501_210000.WAV"),)}
"""Per season, its units: (unit id, shared recording, the AudioMoth name it is recorded under). u1 ran both.
Recordings whose own metadata carries no other start time (the name's time is the unit's clock)."""
PER_LABEL = 40
"""``--per-label`` of the review: more than the two seasons' windows, so the review holds every one of them."""
REPORTED = re.compile(r"(\d+)\s+unit\(s\),\s+(\d+)\s+species,\s+(\d+)\s+detections")


def cli(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def dbs(*paths: Path) -> list[str]:
    return [arg for path in paths for arg in ("--db", str(path))]


@pytest.fixture(scope="module")
def seasons(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, tiny_checkpoint: Path,
            shared_audio: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seasons")
    bundle, labels = own_list_bundle(root, tiny_bundle, tiny_checkpoint)
    found: dict[str, Path] = {"root": root, "bundle": bundle, "labels": labels}
    for year, units in SEASONS.items():
        cards = []
        for unit, source, name in units:
            card = root / "cards" / year / unit
            unit_card(shared_audio / source, root / "sd" / year / unit / name, card, bundle, labels, unit)
            cards.append(card)
        found[year] = root / f"{year}.duckdb"
        cli("logs", "collect", *map(str, cards), "--into", str(found[year]))
    return found


@pytest.fixture(scope="module")
def reviewed(seasons: dict[str, Path]) -> tuple[list[dict[str, str]], Path]:
    """A review across both seasons (`--db 2024 --db 2025`) and its filled review.csv: the reviewer finds the
    higher half of each label's scores right."""
    root = seasons["root"]
    cli("logs", "review", *dbs(seasons["2024"], seasons["2025"]), "--bundle", str(seasons["bundle"]), "--labels",
        str(seasons["labels"]), "--per-label", str(PER_LABEL), "--out", str(root / "review"))
    review = rows_of(root / "review" / "review.csv")
    for name in {r["label"] for r in review}:
        mine = sorted(float(r["score"]) for r in review if r["label"] == name)
        for r in review:
            if r["label"] == name:
                r["verdict"] = "yes" if float(r["score"]) > mine[len(mine) // 2] else "no"
    filled = root / "review-done.csv"
    with open(filled, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(review[0]))
        writer.writeheader()
        writer.writerows(review)
    return review, filled


def per_file_and_label(path: Path) -> Counter[tuple[str, str]]:
    return Counter((r["file"], r["label"]) for r in rows_of(path))


def test_two_seasons_reviewed_rescored_and_reported_as_one(seasons: dict[str, Path],
                                                            reviewed: tuple[list[dict[str, str]], Path]) -> None:
    root, bundle, labels = seasons["root"], seasons["bundle"], seasons["labels"]
    both = dbs(seasons["2024"], seasons["2025"])

    review, filled = reviewed
    held = []
    for year in ("2024", "2025"):
        with open_store(seasons[year]) as store:
            held.append(store.count())
    assert min(held) > 0 and sum(held) <= PER_LABEL  # so no sample is drawn: the review depends on no seed/score
    # every window of both seasons, once for each label, with ids that say which season
    places = Counter(int(r["window_id"]) >> ID_BITS for r in review)
    labels_listed = len(OWN_LIST.splitlines())
    assert places == {0: held[0] * labels_listed, 1: held[1] * labels_listed}, (places, held)
    assert len({(r["label"], r["window_id"]) for r in review}) == len(review)
    assert all(Path(r["source_path"]).is_file() for r in review)  # every reviewed window has its audio
    assert {r["unit_id"] for r in review} == {"u1", "u2"}
    cli("logs", "fit-confidence", "--review", str(filled), "--out", str(root / "confidence.json"),
        "--target-precision", "0.9", "--install", str(bundle), "--bootstrap", "50")

    rescore = ("--bundle", str(bundle), "--labels", str(labels), "--top-k", "2")
    cli("logs", "rescore", *both, *rescore, "--out", str(root / "rescored"))
    alone = [root / f"rescored-{year}" for year in ("2024", "2025")]
    for year, out in zip(("2024", "2025"), alone):
        cli("logs", "rescore", *dbs(seasons[year]), *rescore, "--out", str(out))
    together = per_file_and_label(root / "rescored" / "detections.csv")
    assert together == per_file_and_label(alone[0] / "detections.csv") + per_file_and_label(
        alone[1] / "detections.csv")
    recordings = {str(root / "sd" / year / unit / name) for year, units in SEASONS.items()
                  for unit, _, name in units}
    assert together and {file for file, _ in together} <= recordings  # rows above the fitted thresholds
    assert any(r["p_correct"] for r in rows_of(root / "rescored" / "detections.csv"))  # the installed fit applies

    reported = [REPORTED.search(cli("logs", "report", *dbs(*paths), "--out", str(root / f"report-{n}.html")))
                for n, paths in enumerate(([seasons["2024"], seasons["2025"]], [seasons["2024"]],
                                           [seasons["2025"]]))]
    assert all(reported), "the report's closing line (units, species, detections)"
    (units, species, detections), first, second = (tuple(map(int, m.groups())) for m in reported if m)
    assert detections == first[2] + second[2] and detections > 0
    assert units == 2 and first[0] == 2 and second[0] == 1  # u1 recorded both seasons: one recorder
    assert species >= max(first[1], second[1])

    cli("logs", "export", *both, "--format", "csv", "--out", str(root / "export.csv"))
    for year in ("2024", "2025"):
        cli("logs", "export", *dbs(seasons[year]), "--format", "csv", "--out", str(root / f"export-{year}.csv"))
    exported = Counter((r["unit_id"], r["label"]) for r in rows_of(root / "export.csv"))
    assert exported == sum((Counter((r["unit_id"], r["label"]) for r in rows_of(root / f"export-{year}.csv"))
                            for year in ("2024", "2025")), Counter())
    assert sum(exported.values()) == detections
    cli("logs", "summary", *both, "--out", str(root / "summary"))
    assert {r["unit_id"] for r in rows_of(root / "summary" / "SUMMARY.csv")} == {"u1", "u2"}


def test_a_card_collected_into_two_databases_is_refused_in_one_line(seasons: dict[str, Path]) -> None:
    root = seasons["root"]
    twice = root / "2024-again.duckdb"
    cli("logs", "collect", str(root / "cards" / "2024" / "u2"), "--into", str(twice))
    for command in (["report", "--out", str(root / "twice.html")], ["summary", "--out", str(root / "twice")],
                    ["rescore", "--bundle", str(seasons["bundle"]), "--labels", str(seasons["labels"]), "--out",
                     str(root / "twice")]):
        out = cli("logs", command[0], *dbs(seasons["2024"], twice), *command[1:], code=2)
        assert re.search(r"boot \S+ of unit u2 is in both .*2024\.duckdb and .*2024-again\.duckdb", out), out
        assert "hint: collect each card into one database only" in out and "Traceback" not in out


def test_a_head_trained_on_two_seasons_is_the_same_whatever_the_order_of_db(
        seasons: dict[str, Path], reviewed: tuple[list[dict[str, str]], Path], tmp_path: Path) -> None:
    """The review's window ids are those of `--db 2024 --db 2025`; trained with the databases the other way round,
    the same reviewed windows are found (by their identity) and the head's bytes are the same."""
    review, filled = reviewed
    heads = []
    for number, order in enumerate(((seasons["2024"], seasons["2025"]), (seasons["2025"], seasons["2024"]))):
        bundle = Path(shutil.copytree(seasons["bundle"], tmp_path / f"bundle-{number}"))
        cli("logs", "train-head", *dbs(*order), "--review", str(filled), "--bundle", str(bundle),
            "--name", "frogs")
        heads.append(bundle / open_bundle(bundle).manifest.label_sets[head_key("frogs")].path)
    first, second = (np.load(path) for path in heads)
    assert first["names"].tolist() == second["names"].tolist() and len(first["names"])
    assert first["embeddings"].tobytes() == second["embeddings"].tobytes()
    assert first["bias"].tobytes() == second["bias"].tobytes()
    records = [json.loads(str(head["provenance"])) for head in (first, second)]
    for record in records:
        del record["created_utc"]
    assert records[0] == records[1]
    assert records[0]["databases"] == sorted(str(seasons[y].resolve()) for y in ("2024", "2025"))
    for label, fit in records[0]["labels"].items():  # every reviewed window of the label, of both seasons
        verdicts = Counter(r["verdict"] for r in review if r["label"] == label)
        assert (fit["positives"], fit["negatives"]) == (verdicts["yes"], verdicts["no"])
