"""A mismatched embedding space, for every desk command that mixes windows, labels, fits or heads: one line
naming both spaces and the fix, never rc 0 with windows of another space filtered out or scored in the wrong one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.errors import BundleError
from edge.model.bundle import open_bundle, write_manifest
from edge.model.space import embedding_space, short_space
from tests.faults.conftest import refused, run_cli


def space_of(bundle: Path) -> str:
    return embedding_space(open_bundle(bundle))


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, table: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return path


def test_manifest_names_the_space_of_its_fp32_encoder(example_bundle: Path, other_bundle: Path) -> None:
    manifest = open_bundle(example_bundle).manifest
    assert manifest.embedding_space == manifest.files[manifest.models["fp32"].path]
    assert space_of(other_bundle) != manifest.embedding_space


@pytest.mark.parametrize("command", ["rescore", "search", "review"])
def test_a_mixed_archive_is_worked_one_space_at_a_time(command: str, spaces_season: dict[str, Path],
                                                       example_bundle: Path, other_bundle: Path,
                                                       example_labels: tuple[Path, Path], toad_in_night: Path,
                                                       tmp_path: Path) -> None:
    mine, theirs = space_of(example_bundle), space_of(other_bundle)
    args = {"rescore": ["--labels", example_labels[0]], "review": ["--labels", example_labels[0]],
            "search": ["--example", f"{toad_in_night}@40"]}[command]
    base = ["logs", command, "--db", spaces_season["mixed"], "--bundle", example_bundle, "--out", tmp_path / "o",
            *args]
    refused(run_cli(*base), "2 embedding spaces", short_space(mine), short_space(theirs), "--space")
    refused(run_cli(*base, "--space", theirs[:8]), short_space(mine), short_space(theirs))
    refused(run_cli(*base, "--space", "zz"), "matches 0")
    chosen = run_cli(*base, "--space", mine[:8])
    assert chosen.exit_code == 0, chosen.output
    if command == "rescore":  # exactly the windows of the chosen space, none lost, none of the other
        assert "11 window(s) re-scored, 11 row(s)" in chosen.output and "11 archived window(s) of other" in \
            " ".join(chosen.output.split())


def test_a_mixed_archive_goes_to_hoplite_one_space_at_a_time(spaces_season: dict[str, Path], example_bundle: Path,
                                                             other_bundle: Path, tmp_path: Path) -> None:
    mine, theirs = space_of(example_bundle), space_of(other_bundle)
    base = ["logs", "export", "--db", spaces_season["mixed"], "--format", "hoplite", "--out", tmp_path / "perch"]
    refused(run_cli(*base), "2 embedding spaces", short_space(mine), short_space(theirs), "--space")
    refused(run_cli(*base, "--space", "zz"), "matches 0")
    assert not (tmp_path / "perch").exists()
    chosen = run_cli(*base, "--space", mine[:8])
    assert chosen.exit_code == 0, chosen.output
    assert "11 window(s) of 1 unit(s)" in " ".join(chosen.output.split())  # the chosen space's, none of the other
    metadata = sqlite3.connect(tmp_path / "perch" / "hoplite.sqlite").execute(
        "SELECT value FROM hoplite_metadata WHERE key = 'biolingual_edge'").fetchone()[0]
    assert json.loads(metadata)["embedding_space"] == mine


@pytest.mark.parametrize("command", ["rescore", "search", "review"])
def test_an_archive_of_another_space_is_refused(command: str, spaces_season: dict[str, Path], other_bundle: Path,
                                               example_bundle: Path, example_labels: tuple[Path, Path],
                                               toad_in_night: Path, tmp_path: Path) -> None:
    args = ["--example", f"{toad_in_night}@40"] if command == "search" else ["--labels", example_labels[0]]
    result = run_cli("logs", command, "--db", spaces_season["one"], "--bundle", other_bundle, "--out", tmp_path, *args)
    refused(result, short_space(space_of(example_bundle)), short_space(space_of(other_bundle)))


def test_search_text_through_another_checkpoint_is_refused(spaces_season: dict[str, Path], example_bundle: Path,
                                                           tiny_checkpoint: Path, other_checkpoint: Path,
                                                           tmp_path: Path) -> None:
    base = ["logs", "search", "--db", spaces_season["one"], "--bundle", example_bundle, "--out", tmp_path,
            "--text", "toad trill"]
    refused(run_cli(*base, "--model", other_checkpoint), "another text space", str(other_checkpoint))
    assert run_cli(*base, "--model", tiny_checkpoint).exit_code == 0


def _review(db: Path, bundle: Path, labels: Path, out: Path) -> Path:
    """``logs review`` of every toad window, half judged yes (the higher scores) and half no."""
    result = run_cli("logs", "review", "--db", db, "--bundle", bundle, "--labels", labels, "--per-label", "11",
                     "--out", out)
    assert result.exit_code == 0, result.output
    table = [r for r in rows(out / "review.csv") if r["label"] == "toad"]
    median = float(np.median([float(r["score"]) for r in table]))
    for row in table:
        row["verdict"] = "yes" if float(row["score"]) >= median else "no"
    return write_rows(out / "filled.csv", table)


def test_train_head_refuses_an_archive_and_review_of_another_space(spaces_season: dict[str, Path], bundle_a: Path,
                                                                   other_bundle: Path, example_bundle: Path,
                                                                   example_labels: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    review = _review(spaces_season["one"], bundle_a, example_labels[0], tmp_path / "review")
    other = Path(shutil.copytree(other_bundle, tmp_path / "other"))
    before = (other / "manifest.json").read_bytes()
    refused(run_cli("logs", "train-head", "--db", spaces_season["one"], "--review", review, "--bundle", other,
                    "--name", "marsh"), short_space(space_of(example_bundle)), short_space(space_of(other_bundle)))
    assert (other / "manifest.json").read_bytes() == before  # nothing stored in the wrong space
    done = run_cli("logs", "train-head", "--db", spaces_season["one"], "--review", review, "--bundle", bundle_a,
                   "--name", "marsh")
    assert done.exit_code == 0, done.output
    head = open_bundle(bundle_a).manifest.label_sets["head-marsh"]
    assert head.embedding_space == space_of(bundle_a)


def test_a_head_grafted_into_a_bundle_of_another_space_is_refused_at_load(spaces_season: dict[str, Path],
                                                                          bundle_a: Path, other_bundle: Path,
                                                                          example_labels: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    from edge.scoring.heads import load_head

    review = _review(spaces_season["one"], bundle_a, example_labels[0], tmp_path / "review")
    assert run_cli("logs", "train-head", "--db", spaces_season["one"], "--review", review, "--bundle", bundle_a,
                   "--name", "marsh").exit_code == 0
    assert load_head(open_bundle(bundle_a), "marsh").names == ("toad",)
    other = Path(shutil.copytree(other_bundle, tmp_path / "other"))
    entry = open_bundle(bundle_a).manifest.label_sets["head-marsh"]
    shutil.copy(bundle_a / entry.path, other / entry.path)
    for recorded in (entry, dataclasses.replace(entry, embedding_space="")):  # the entry's space, else provenance
        manifest = open_bundle(other).manifest
        write_manifest(other, dataclasses.replace(manifest, label_sets={**manifest.label_sets,
                                                                        "head-marsh": recorded}))
        with pytest.raises(BundleError, match=f"{short_space(space_of(bundle_a))}.*{short_space(space_of(other))}"):
            load_head(open_bundle(other), "marsh")


def test_confidence_of_another_space_or_of_none_is_refused(spaces_season: dict[str, Path], bundle_a: Path,
                                                           other_bundle: Path, example_labels: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    from edge.scoring.confidence import confidence_path, load_confidence
    from edge.scoring.labels import read_labels

    review = _review(spaces_season["one"], bundle_a, example_labels[0], tmp_path / "review")
    other = Path(shutil.copytree(other_bundle, tmp_path / "other"))
    refused(run_cli("logs", "fit-confidence", "--review", review, "--out", tmp_path / "c.json", "--install", other,
                    "--bootstrap", "20"), short_space(space_of(bundle_a)), short_space(space_of(other)))
    table = rows(review)
    blank = write_rows(tmp_path / "blank.csv", [{**r, "model_sha256": ""} for r in table])
    refused(run_cli("logs", "fit-confidence", "--review", blank, "--out", tmp_path / "c.json", "--install", bundle_a,
                    "--bootstrap", "20"), "(none recorded)")
    # a fit that reached the bundle without a space (an old or hand-made file) is refused when loaded
    key = read_labels(example_labels[0]).key
    rel = confidence_path(key)
    (bundle_a / rel).parent.mkdir(exist_ok=True)
    (bundle_a / rel).write_text(json.dumps({"schema": 1, "model_sha256": "", "labels_key": key, "labels": {}}))
    manifest = open_bundle(bundle_a).manifest
    write_manifest(bundle_a, dataclasses.replace(manifest, files={**manifest.files, rel: ""}))
    with pytest.raises(BundleError, match="none recorded"):
        load_confidence(open_bundle(bundle_a), key)


def _relabel_card(source: Path, target: Path, model_sha256: str, space: str) -> Path:
    """A copy of a card whose segments say another model file computed them (a TensorRT engine or INT8 file),
    recording ``space`` (``""``: a segment written before spaces were named)."""
    from edge.card.embedformat import read_embedding_segment

    shutil.copytree(source, target)
    for path in target.rglob("*.emb"):
        segment = read_embedding_segment(path)
        assert segment.header is not None
        header = dataclasses.replace(segment.header, model_sha256=model_sha256, embedding_space=space)
        path.write_bytes(header.encode() + segment.records.tobytes())
    return target


def test_windows_of_an_engine_or_int8_unit_are_in_the_fp32_bundles_space(spaces_season: dict[str, Path],
                                                                         example_bundle: Path,
                                                                         example_labels: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    from desk.collect.ingest import collect

    engine_sha = "e" * 64  # a TensorRT engine built on the unit: the desk's bundle never held that file
    card = _relabel_card(spaces_season["emb_a"], tmp_path / "trt_card", engine_sha, space_of(example_bundle))
    collect([card], tmp_path / "trt.duckdb")
    result = run_cli("logs", "rescore", "--db", tmp_path / "trt.duckdb", "--bundle", example_bundle, "--labels",
                     example_labels[0], "--out", tmp_path / "out")
    assert result.exit_code == 0 and "11 window(s) re-scored" in result.output, result.output
    want = rows(spaces_season["root"] / "analyze_a" / "detections.csv")
    got = rows(tmp_path / "out" / "detections.csv")
    assert [(r["start_s"], r["label"]) for r in got] == [(r["start_s"], r["label"]) for r in want[::2]]


def test_windows_from_before_spaces_were_named_map_by_model_sha_or_fail_clearly(spaces_season: dict[str, Path],
                                                                                example_bundle: Path,
                                                                                example_labels: tuple[Path, Path],
                                                                                tmp_path: Path) -> None:
    from desk.collect.ingest import collect

    manifest = open_bundle(example_bundle).manifest
    fp32_sha = manifest.files[manifest.models["fp32"].path]
    for name, sha, ok in (("fp32", fp32_sha, True), ("engine", "e" * 64, False)):
        card = _relabel_card(spaces_season["emb_a"], tmp_path / name, sha, "")
        collect([card], tmp_path / f"{name}.duckdb")
        result = run_cli("logs", "rescore", "--db", tmp_path / f"{name}.duckdb", "--bundle", example_bundle,
                         "--labels", example_labels[0], "--out", tmp_path / f"out_{name}")
        if ok:
            assert result.exit_code == 0 and "11 window(s) re-scored" in result.output, result.output
        else:
            refused(result, "e" * 12, short_space(fp32_sha), "the bundle the units ran")
