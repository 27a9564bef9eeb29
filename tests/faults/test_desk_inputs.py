"""Bad input at the desk is one line naming the thing and the fix (``error:`` + ``hint:``), never a traceback,
a hang, a network request or a silent wrong answer; what can be kept is kept."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from desk.collect.database import connect
from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.embeddings import EmbeddingSpec
from edge.model.bundle import open_bundle
from edge.model.space import embedding_space
from edge.scoring.labels import read_labels
from tests.cardlog_support import HOP, RATE, T0, WINDOW, event_at, write_card
from tests.faults.conftest import refused, run_cli

REVIEW_COLUMNS = ("label", "score", "verdict", "labels_key", "model_sha256", "score_mode")


def test_a_carriage_return_in_a_card_csv_costs_that_line_only(tmp_path: Path) -> None:
    write_card(tmp_path / "card", minutes=2)
    path = sorted((tmp_path / "card" / "detections").iterdir())[0]
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3][:20] + b"\r" + lines[3][20:]
    path.write_bytes(b"\n".join(lines))
    result = run_cli("logs", "collect", tmp_path / "card", "--into", tmp_path / "db.duckdb")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"{path.name}:4: damaged line" in " ".join(result.output.split())
    con = connect(tmp_path / "db.duckdb", read_only=True)
    assert con.execute("SELECT count(*) FROM detections").fetchone() == (len(lines) - 3,)  # header, \r line, ""
    con.close()


def test_a_boot_of_a_newer_schema_is_skipped_whole_and_collect_exits_1(tmp_path: Path) -> None:
    card = tmp_path / "card"
    log = CardLog(card, UnitIdentity("AM-09", "marsh"), RATE, {"config_hash": "x"},
                  embeddings=EmbeddingSpec("fp16", 8, "a" * 64, "b" * 64))
    log.open_stream(T0, 0, "ntp")
    for i in range(6):
        log.detections([event_at(i * HOP, "toad")])
        log.effort(i * HOP, i * HOP + WINDOW)
        log.embeddings([i * HOP], [i * HOP + WINDOW], np.eye(8, dtype=np.float32)[i : i + 1])
    log.close()
    for manifest in (card / "boots").glob("*.json"):
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "schema_version": 99}))
    result = run_cli("logs", "collect", card, "--into", tmp_path / "db.duckdb")
    assert result.exit_code == 1 and "schema version 99" in result.output and "Traceback" not in result.output
    con = connect(tmp_path / "db.duckdb", read_only=True)
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("detections", "effort", "windows")]
    con.close()
    assert counts == [0, 0, 0]  # its windows too: nothing of a boot this collector cannot read


def test_a_database_that_is_not_duckdb_is_one_line_and_never_fetches_an_extension(tmp_path: Path) -> None:
    lite = tmp_path / "season.duckdb"
    with sqlite3.connect(lite) as con:
        con.execute("CREATE TABLE detections (a)")
    refused(run_cli("logs", "summary", "--db", lite, "--out", tmp_path / "s"), "is not a DuckDB database")
    refused(run_cli("logs", "collect", tmp_path, "--into", lite), "is not a DuckDB database")
    refused(run_cli("logs", "collect", tmp_path, "--into", tmp_path / "missing" / "x.duckdb"), "does not exist",
            "mkdir -p")
    con = connect(tmp_path / "real.duckdb")  # and a real one is opened with extension auto-install/-load off
    settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name LIKE 'auto%extensions'")
                    .fetchall())
    con.close()
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}


def test_search_filters_that_match_nothing_by_mistake_are_errors(spaces_season: dict[str, Path],
                                                                  example_bundle: Path, toad_in_night: Path,
                                                                  tmp_path: Path) -> None:
    base = ["logs", "search", "--db", spaces_season["one"], "--bundle", example_bundle, "--out", tmp_path,
            "--example", f"{toad_in_night}@40"]
    refused(run_cli(*base, "--from", "2024-06-02", "--to", "2024-06-01"), "--from", "is not before --to")
    con = connect(spaces_season["one"], read_only=True)
    (unit,) = con.execute("SELECT DISTINCT unit_id FROM windows").fetchone()
    con.close()
    refused(run_cli(*base, "--unit", "nobody"), "--unit nobody", f"(units: {unit})")
    refused(run_cli(*base, "--engine", "ray"), "--engine ray runs the exact search only", "add --exact")
    refused(run_cli(*base, "--exact", "--engine", "spark"), "unknown engine 'spark'", "local, ray")
    refused(run_cli(*base, "--exact", "--ray-address", "127.0.0.1:1"), "--ray-address needs --engine ray")
    refused(run_cli(*base, "--exact", "--ray-stall-seconds", "30"), "--ray-stall-seconds needs --engine ray")
    refused(run_cli(*base, "--exact", "--engine", "ray", "--ray-stall-seconds", "-1"), "--ray-stall-seconds -1 must "
            "be > 0", "the default is 600")


def write_review(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REVIEW_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def review_rows(bundle_a: Path, example_labels: tuple[Path, Path]) -> list[dict[str, str]]:
    """Twelve verdicts on one label that fit well (higher scores are right)."""
    key, space = read_labels(example_labels[0]).key, embedding_space(open_bundle(bundle_a))
    return [{"label": "toad", "score": f"{10 + i * 0.5}", "verdict": "yes" if i % 3 else "no", "labels_key": key,
             "model_sha256": space, "score_mode": "logit"} for i in range(12)]


def test_fit_confidence_refuses_bad_scores_strange_labels_and_nothing_fitted(review_rows: list[dict[str, str]],
                                                                            bundle_a: Path, tmp_path: Path) -> None:
    base = ["logs", "fit-confidence", "--out", tmp_path / "c.json", "--bootstrap", "20"]
    for bad in ("nan", "inf", "-inf", "high"):
        rows = [dict(r) for r in review_rows]
        rows[4]["score"] = bad
        refused(run_cli(*base, "--review", write_review(tmp_path / "bad.csv", rows)), "line 6", "not a finite")
    few = write_review(tmp_path / "few.csv", review_rows[:4])
    refused(run_cli(*base, "--review", few), "no label could be fitted", "toad")
    assert not (tmp_path / "c.json").exists()
    heron = write_review(tmp_path / "heron.csv", [{**r, "label": "heron"} for r in review_rows])
    refused(run_cli(*base, "--review", heron, "--install", bundle_a), "'heron'", "does not have")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(write_review(tmp_path / "ok.csv", [{**r, "label": "crapaud épineux"} for r in review_rows])
                       .read_text(encoding="utf-8").encode("latin-1"))
    refused(run_cli(*base, "--review", latin1), "is not UTF-8")
    done = run_cli(*base, "--review", tmp_path / "ok.csv")  # the same verdicts, well formed, fit
    assert done.exit_code == 0, done.output


def test_a_full_disk_under_collect_and_report_is_one_line_and_leaves_no_partial_file(tmp_path: Path) -> None:
    from tests.cardlog_support import fill_up, small_filesystem

    write_card(tmp_path / "card", minutes=2)
    assert run_cli("logs", "collect", tmp_path / "card", "--into", tmp_path / "db.duckdb").exit_code == 0
    with small_filesystem(tmp_path / "full", "1m") as full:
        fill_up(full)
        refused(run_cli("logs", "collect", tmp_path / "card", "--into", full / "db.duckdb"), "db.duckdb")
        refused(run_cli("logs", "report", "--db", tmp_path / "db.duckdb", "--out", full / "report.html"),
                "report.html", "free space")
        assert sorted(p.name for p in full.iterdir() if p.name != "filler.bin") in ([], ["db.duckdb"])
