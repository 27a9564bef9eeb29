"""Many season databases read as one archive (``--db`` repeated): window ids translated, nothing collides."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from desk.archive.many import ID_BITS
from desk.archive.rescore import RescoreOptions, rescore
from desk.archive.windows import WindowBatch, WindowFilter, normalised, open_store
from desk.collect.database import CollectError
from edge.cli import app
from tests.desk.archive.test_rescore_memory import synthetic_bundle, unit_rows

RATE = 48_000
PER_SEASON = 150


def season(db: Path, unit: str, vectors: np.ndarray, space: str) -> None:
    count = len(vectors)
    starts = np.arange(count, dtype=np.int64) * 5 * RATE
    with open_store(db, writable=True) as store:
        store.insert(WindowBatch("a.emb", unit, "site", "boot-1", RATE, space, None, f"/cards/{unit}",
                                 np.zeros(count, np.int32), starts, starts + 10 * RATE,
                                 1_714_000_000_000_000 + starts * 1_000_000 // RATE, ["ntp"] * count,
                                 vectors.astype(np.float16)))


@pytest.fixture(scope="module")
def seasons(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("many")
    bundle, labels, space = synthetic_bundle(root / "bundle", 5)
    vectors = [unit_rows(PER_SEASON, 10), unit_rows(PER_SEASON, 11)]
    dbs = [root / "2024.duckdb", root / "2025.duckdb"]
    for db, unit, rows in zip(dbs, ("marsh-2024", "marsh-2025"), vectors):
        season(db, unit, rows, space)
    return {"dbs": dbs, "vectors": vectors, "bundle": bundle, "labels": labels, "root": root}


def test_two_seasons_search_as_one_with_ids_that_do_not_collide(seasons: dict) -> None:
    everything = normalised(np.concatenate(seasons["vectors"]).astype(np.float16))
    with open_store(seasons["dbs"]) as store:
        assert store.count() == 2 * PER_SEASON
        ids = store.match()
        assert len(set(ids.tolist())) == 2 * PER_SEASON
        assert (ids >> ID_BITS).tolist() == [0] * PER_SEASON + [1] * PER_SEASON
        np.testing.assert_array_equal(store.embeddings(ids), everything)
        query = everything[PER_SEASON + 17]
        found, scores = store.nearest(query, 10)
        expected = np.argsort(-(everything @ query), kind="stable")[:10]
        np.testing.assert_array_equal(found, ids[expected])
        assert found[0] == (1 << ID_BITS) | 18 and scores[0] > 0.999
        rows = store.windows(found[::-1], ("window_id", "unit_id")).to_pylist()
        assert [r["window_id"] for r in rows] == found[::-1].tolist()
        assert [r["unit_id"] for r in rows] == ["marsh-2025" if i >> ID_BITS else "marsh-2024" for i in found[::-1]]
        assert store.tally(("unit_id",)) == {("marsh-2024",): PER_SEASON, ("marsh-2025",): PER_SEASON}
        assert store.count(WindowFilter(units=("marsh-2025",))) == PER_SEASON
        with pytest.raises(CollectError, match="belongs to none"):
            store.windows([5 << ID_BITS])


def test_rescore_of_two_seasons_writes_both(seasons: dict) -> None:
    out = seasons["root"] / "rescored"
    result = rescore(seasons["dbs"], seasons["bundle"], seasons["labels"], out, RescoreOptions(formats=("csv",)))
    assert result.windows == result.rows == 2 * PER_SEASON
    by_cli = CliRunner().invoke(app, ["logs", "rescore", "--db", str(seasons["dbs"][0]), "--db",
                                      str(seasons["dbs"][1]), "--bundle", str(seasons["bundle"]), "--labels",
                                      str(seasons["labels"]), "--out", str(out), "--format", "csv"])
    assert by_cli.exit_code == 0, by_cli.output
    assert f"{2 * PER_SEASON} window(s) re-scored" in by_cli.output
    with open(out / "detections.csv", newline="", encoding="utf-8") as handle:
        recordings = [row["file"] for row in csv.DictReader(handle)]
    assert recordings.count("marsh-2024/boot-1/stream0") == PER_SEASON
    assert recordings.count("marsh-2025/boot-1/stream0") == PER_SEASON


def test_locate_finds_windows_by_place_in_either_season(seasons: dict) -> None:
    with open_store(seasons["dbs"]) as store:
        ids = store.locate(["marsh-2025", "marsh-2024", "marsh-2024", "nobody"], ["boot-1"] * 4,
                           np.zeros(4, np.int64), np.array([3, 0, 7, 0]) * 5 * RATE)
    assert ids.tolist() == [(1 << ID_BITS) | 4, 1, 8, 0]
    with open_store(seasons["dbs"][0]) as store:
        assert store.locate(["marsh-2024"], ["boot-1"], np.zeros(1, np.int64), np.array([1])).tolist() == [0]


def test_the_same_boot_in_two_databases_is_refused(seasons: dict) -> None:
    copy = seasons["root"] / "copy.duckdb"
    season(copy, "marsh-2024", unit_rows(3, 12), "space")
    with pytest.raises(CollectError, match=r"boot boot-1 of unit marsh-2024 is in both .*2024\.duckdb and "
                                           r".*copy\.duckdb") as raised:
        open_store([seasons["dbs"][0], copy])
    assert "collect each card into one database only" in raised.value.hint
