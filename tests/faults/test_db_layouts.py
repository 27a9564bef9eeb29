"""A collection database of another layout, for every desk command that opens one: a newer layout, or an older
one missing tables or columns this code reads, is one line naming the file, its layout version and the fix —
never a DuckDB traceback, never rc 0 on a database read wrong. ``logs collect`` brings an older one up to date.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from desk.collect.layout import LAYOUT_VERSION, UNVERSIONED
from desk.review.confidence import read_review
from tests.faults.conftest import refused, run_cli
from tests.faults.test_spaces import _review

NEWER = LAYOUT_VERSION + 1


def commands(db: Path, bundle: Path, labels: Path, review: Path, example: str, out: Path) -> dict[str, list[object]]:
    """Every desk command that reads a collection database, on ``db``."""
    return {
        "export": ["logs", "export", "--db", db, "--format", "csv", "--out", out / "export"],
        "summary": ["logs", "summary", "--db", db, "--out", out / "summary"],
        "report": ["logs", "report", "--db", db, "--out", out / "report.html"],
        "rescore": ["logs", "rescore", "--db", db, "--bundle", bundle, "--labels", labels, "--out", out / "rescore"],
        "search": ["logs", "search", "--db", db, "--bundle", bundle, "--example", example, "--out", out / "search"],
        "review": ["logs", "review", "--db", db, "--bundle", bundle, "--labels", labels, "--out", out / "review"],
        "train-head": ["logs", "train-head", "--db", db, "--review", review, "--bundle", bundle, "--name", "marsh"],
    }


def copy_season(db: Path, into: Path) -> Path:
    """A copy of a season database and its archive folder."""
    into.mkdir()
    shutil.copytree(db.with_suffix(".archive"), into / db.with_suffix(".archive").name)
    return Path(shutil.copy(db, into / db.name))


def layout_of(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return int(con.execute("SELECT max(version) FROM layout").fetchall()[0][0])


@pytest.fixture
def filled_review(spaces_season: dict[str, Path], bundle_a: Path, example_labels: tuple[Path, Path],
                  tmp_path: Path) -> Path:
    review = _review(spaces_season["one"], bundle_a, example_labels[0], tmp_path / "made")
    assert read_review(review)  # a review train-head takes, so that only the database can be refused
    return review


def test_a_database_of_a_newer_layout_is_refused_by_every_command_and_left_as_it_is(
        spaces_season: dict[str, Path], bundle_a: Path, example_labels: tuple[Path, Path], toad_in_night: Path,
        filled_review: Path, tmp_path: Path) -> None:
    db = copy_season(spaces_season["one"], tmp_path / "newer")
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE layout SET version = ?", [NEWER])
    for name, args in commands(db, bundle_a, example_labels[0], filled_review, f"{toad_in_night}@40",
                               tmp_path / "out").items():
        text = refused(run_cli(*args), str(db), f"layout {NEWER}", "newer", "upgrade biolingual-edge")
        assert name and "Traceback" not in text
    for writer in (["logs", "collect", spaces_season["emb_a"], "--into", db],  # the two that write into one
                   ["logs", "live", "--broker", "mqtt://127.0.0.1:9", "--into", db, "--for", "1"]):
        refused(run_cli(*writer), str(db), f"layout {NEWER}", "upgrade biolingual-edge")
    assert layout_of(db) == NEWER


def test_a_database_of_an_older_layout_is_refused_by_every_command_until_collect_brings_it_up_to_date(
        spaces_season: dict[str, Path], bundle_a: Path, example_labels: tuple[Path, Path], toad_in_night: Path,
        filled_review: Path, tmp_path: Path) -> None:
    untouched = commands(spaces_season["one"], bundle_a, example_labels[0], filled_review, f"{toad_in_night}@40",
                         tmp_path / "before")
    outcome = {name: run_cli(*args).exit_code for name, args in untouched.items()}
    db = copy_season(spaces_season["one"], tmp_path / "older")
    with duckdb.connect(str(db)) as con:  # as a release without layout versions, clips or disk figures wrote it
        con.execute("DROP TABLE layout")
        con.execute("DROP TABLE clips")
        con.execute("ALTER TABLE health DROP COLUMN disk_free_bytes")
        con.execute("ALTER TABLE windows DROP COLUMN source_offset")
    every = commands(db, bundle_a, example_labels[0], filled_review, f"{toad_in_night}@40", tmp_path / "out")
    for args in every.values():
        refused(run_cli(*args), str(db), f"older layout (layout {UNVERSIONED}", "health.disk_free_bytes",
                f"logs collect CARDS --into {db}")
    collected = run_cli("logs", "collect", spaces_season["emb_a"], "--into", db)
    assert collected.exit_code == 0 and "nothing new" in collected.output, collected.output
    assert layout_of(db) == LAYOUT_VERSION
    for name, args in every.items():  # each command now does what it does on the database before the change
        done = run_cli(*args)
        assert done.exit_code == outcome[name] and "layout" not in done.output, (name, done.output)
    assert outcome["rescore"] == outcome["search"] == outcome["train-head"] == 0
