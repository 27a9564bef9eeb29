"""A label set stored in a bundle of another embedding space (the same checkpoint exported again: the revision
agrees, the audio tower does not) is refused by every command that scores with it, in one line naming both spaces
and the command that recomputes it — never rc 0 with labels scored in the wrong space. Both ways a set is found
are covered: the set of exactly this list, and a list assembled label by label from the bundle's sets."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from edge.model.bundle import open_bundle, write_manifest
from edge.model.space import embedding_space, short_space
from tests.faults.conftest import refused, run_cli


def moved_to_space(bundle: Path, space: str) -> None:
    """Record every label set of ``bundle`` as stored in ``space``."""
    manifest = open_bundle(bundle).manifest
    sets = {key: dataclasses.replace(entry, embedding_space=space) for key, entry in manifest.label_sets.items()}
    write_manifest(bundle, dataclasses.replace(manifest, label_sets=sets))


@pytest.fixture(params=["the list's own set", "assembled label by label"])
def labels(request: pytest.FixtureRequest, example_labels: tuple[Path, Path], tmp_path: Path) -> Path:
    if request.param == "the list's own set":
        return example_labels[0]
    one = tmp_path / "toad_only.txt"  # not a stored list: its label comes from the example set, by name
    one.write_text("toad\n", encoding="utf-8")
    return one


def test_a_label_set_of_another_space_is_refused_by_every_command_that_scores(
        spaces_season: dict[str, Path], bundle_a: Path, other_bundle: Path, labels: Path, toad_in_night: Path,
        tmp_path: Path) -> None:
    mine, theirs = short_space(embedding_space(open_bundle(bundle_a))), short_space(
        embedding_space(open_bundle(other_bundle)))
    for args in (["analyze", toad_in_night, "--labels", labels, "--bundle", bundle_a, "--out", tmp_path / "a"],
                 ["logs", "rescore", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", labels,
                  "--out", tmp_path / "r"],
                 ["logs", "review", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", labels,
                  "--out", tmp_path / "v"]):
        assert run_cli(*args).exit_code == 0  # in its own space the set scores
    moved_to_space(bundle_a, embedding_space(open_bundle(other_bundle)))
    for args in (["analyze", toad_in_night, "--labels", labels, "--bundle", bundle_a, "--out", tmp_path / "a2"],
                 ["logs", "rescore", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", labels,
                  "--out", tmp_path / "r2"],
                 ["logs", "review", "--db", spaces_season["one"], "--bundle", bundle_a, "--labels", labels,
                  "--out", tmp_path / "v2"],
                 ["run", "--bundle", bundle_a, "--labels", labels, "--input", toad_in_night, "--fast",
                  "--threshold", "0", "--log-dir", tmp_path / "card"]):
        refused(run_cli(*args), "label set", f"embedding space {theirs}", f"is space {mine}", "recompute it")


def test_search_text_refuses_a_text_encoder_of_another_checkpoint_instead_of_passing_it_over(
        spaces_season: dict[str, Path], text_bundle: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(text_bundle, tmp_path / "bundle"))
    base = ["logs", "search", "--db", spaces_season["one"], "--bundle", bundle, "--text", "toad trill"]
    assert run_cli(*base, "--out", tmp_path / "own").exit_code == 0  # its own text tower ranks
    manifest = open_bundle(bundle).manifest
    grafted = dataclasses.replace(manifest.text_encoders["fp32"], details={
        **manifest.text_encoders["fp32"].details, "model_revision": "sha256:another-checkpoint"})
    write_manifest(bundle, dataclasses.replace(manifest, text_encoders={"fp32": grafted}))
    for extra in ([], ["--model", tiny_checkpoint]):  # with a good --model too: the bundle's encoder is not skipped
        refused(run_cli(*base, "--out", tmp_path / "x", *extra), "text encoder", "sha256:another-checkpoint",
                manifest.model_revision)
