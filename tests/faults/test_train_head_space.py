"""``logs train-head`` on an archive of two embedding spaces works in one of them, chosen with ``--space`` as on
every command that reads windows: without it (or with the other space) one line naming the spaces; with the
bundle's space the head is trained on exactly the reviewed windows and records that space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from edge.model.bundle import open_bundle
from edge.model.space import embedding_space, short_space
from tests.faults.conftest import refused, run_cli
from tests.faults.test_spaces import rows, write_rows


class TwoSpaces(NamedTuple):
    mine: str
    """The writable example bundle's embedding space."""
    theirs: str
    """The other bundle's."""
    review: Callable[..., Path]
    """``review(*db_args)``: the toad windows of ``mine`` reviewed, yes at or above their median score (a CSV)."""


@pytest.fixture
def two_spaces(bundle_a: Path, other_bundle: Path, example_labels: tuple[Path, Path], tmp_path: Path) -> TwoSpaces:
    mine, theirs = embedding_space(open_bundle(bundle_a)), embedding_space(open_bundle(other_bundle))

    def review(*db_args: str | Path) -> Path:
        reviewed = run_cli("logs", "review", *db_args, "--bundle", bundle_a, "--labels", example_labels[0],
                           "--per-label", "11", "--space", mine[:8], "--out", tmp_path / "review")
        assert reviewed.exit_code == 0, reviewed.output
        table = [r for r in rows(tmp_path / "review" / "review.csv") if r["label"] == "toad"]
        median = float(np.median([float(r["score"]) for r in table]))
        return write_rows(tmp_path / "filled.csv",
                          [{**r, "verdict": "yes" if float(r["score"]) >= median else "no"} for r in table])

    return TwoSpaces(mine, theirs, review)


def test_train_head_on_a_mixed_archive_takes_one_space(spaces_season: dict[str, Path], bundle_a: Path,
                                                       two_spaces: TwoSpaces) -> None:
    mine, theirs = two_spaces.mine, two_spaces.theirs
    mixed = spaces_season["mixed"]
    review = two_spaces.review("--db", mixed)
    base = ["logs", "train-head", "--db", mixed, "--review", review, "--bundle", bundle_a, "--name", "marsh"]
    refused(run_cli(*base), "2 embedding spaces", short_space(mine), short_space(theirs), "--space")
    refused(run_cli(*base, "--space", theirs[:8]), short_space(mine), short_space(theirs))
    assert "head-marsh" not in open_bundle(bundle_a).manifest.label_sets  # nothing stored by a refusal
    done = run_cli(*base, "--space", mine[:8])
    assert done.exit_code == 0, done.output
    assert "toad: 6 pos / 5 neg" in done.output  # the reviewed windows, all of them, none of the other space
    assert open_bundle(bundle_a).manifest.label_sets["head-marsh"].embedding_space == mine


def test_train_head_over_two_databases_of_two_spaces_takes_one(spaces_season: dict[str, Path], bundle_a: Path,
                                                               two_spaces: TwoSpaces, tmp_path: Path) -> None:
    """Two spaces in two databases (`--db` repeated) are refused as in one: `--space` picks, in any order."""
    from desk.collect.ingest import collect

    mine, theirs = two_spaces.mine, two_spaces.theirs
    other = tmp_path / "theirs.duckdb"
    collect([spaces_season["root"] / "emb_b"], other)
    review = two_spaces.review("--db", spaces_season["one"], "--db", other)
    base = ["logs", "train-head", "--db", other, "--db", spaces_season["one"], "--review", review, "--bundle",
            bundle_a, "--name", "marsh"]
    refused(run_cli(*base), "2 embedding spaces", short_space(mine), short_space(theirs), "--space")
    assert "head-marsh" not in open_bundle(bundle_a).manifest.label_sets
    done = run_cli(*base, "--space", mine[:8])
    assert done.exit_code == 0, done.output
    assert "toad: 6 pos / 5 neg" in done.output
