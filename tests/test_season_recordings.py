"""Season test 1: a folder-per-site season of AudioMoth-named recordings, chained as an ecologist runs it.

analyze --embeddings -> logs collect -> logs summary / logs report (opened in Chromium), asserting the numbers
a user reads: the units are the sites, each unit's effort is its recordings' durations, uptime never exceeds
what the recordings span, and the report shows the database's figures.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from desk.collect.database import connect
from edge.cli import app

RATE = 48_000
BAT_RATE = 384_000
RECORDINGS = {
    # site folder -> (AudioMoth file name (UTC start), seconds, sample rate)
    "site-A": [("20240503_050000.WAV", 37.5, RATE), ("20240503_051000.WAV", 22.25, RATE)],
    "site-B": [("20240503_235945.WAV", 30.0, RATE)],  # runs over midnight: two days, minutes split there
    "site-C": [("20240504_010000.WAV", 12.0, RATE), ("20240504_011500.WAV", 3.0, BAT_RATE)],
}
SECOND_TOLERANCE = 1.0
BIRDNET = "BirdNET_CombinedTable.csv"


def _start(name: str) -> datetime:
    return datetime.strptime(name[:15], "%Y%m%d_%H%M%S")


def _write_recordings(root: Path) -> None:
    rng = np.random.default_rng(7)
    for site, files in RECORDINGS.items():
        (root / site).mkdir(parents=True)
        for name, seconds, rate in files:
            audio = 0.05 * rng.standard_normal(round(seconds * rate)).astype(np.float32)
            sf.write(root / site / name, audio, rate, subtype="PCM_16")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path,
           example_labels: tuple[Path, Path]) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("recordings-season")
    _write_recordings(root / "sd")
    analyzed = _cli("analyze", str(root / "sd"), "--labels", str(example_labels[0]), "--bundle", str(example_bundle),
                    "--out", str(root / "results"), "--embeddings", str(root / "emb"), "--threshold", "-100",
                    "--piece-seconds", "10", "--workers", "1")
    db = root / "season.duckdb"
    _cli("logs", "collect", str(root / "emb"), "--into", str(db))
    _cli("logs", "summary", "--db", str(db), "--out", str(root / "summary"))
    _cli("logs", "report", "--db", str(db), "--out", str(root / "report.html"))
    return {"root": root, "db": db, "analyzed": analyzed}


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _summary(season: dict[str, Any]) -> dict[str, dict[str, str]]:
    with open(season["root"] / "summary" / "SUMMARY.csv", newline="", encoding="utf-8") as handle:
        return {row["unit_id"]: row for row in csv.DictReader(handle)}


def test_the_units_are_the_site_folders(season: dict[str, Any]) -> None:
    units = {r[0] for r in _query(season["db"], "SELECT DISTINCT unit_id FROM card_boots")}
    assert units == set(RECORDINGS)
    windows = {r[0] for r in _query(season["db"], "SELECT DISTINCT unit_id FROM windows")}
    assert windows == set(RECORDINGS)
    assert set(_summary(season)) == set(RECORDINGS)


def test_effort_is_the_recordings_durations_and_uptime_stays_within_their_span(season: dict[str, Any]) -> None:
    effort = dict(_query(season["db"], "SELECT unit_id, sum(analysed_s) FROM unit_effort GROUP BY ALL"))
    summary = _summary(season)
    for site, files in RECORDINGS.items():
        recorded = sum(seconds for _, seconds, _ in files)
        span = (max(_start(n) + timedelta(seconds=s) for n, s, _ in files)
                - min(_start(n) for n, _, _ in files)).total_seconds()
        row = summary[site]
        assert effort[site] == pytest.approx(recorded, abs=SECOND_TOLERANCE), site
        assert float(row["effort_h"]) * 3600 == pytest.approx(recorded, abs=SECOND_TOLERANCE), site
        assert float(row["uptime_h"]) * 3600 <= span + SECOND_TOLERANCE, site
        assert float(row["uptime_h"]) * 3600 == pytest.approx(recorded, abs=SECOND_TOLERANCE), site
        assert (int(row["boots"]), int(row["crashes"])) == (len(files), 0), site
        first = min(_start(n) for n, _, _ in files)
        assert row["first_utc"].startswith(first.strftime("%Y-%m-%dT%H:%M:%S")), site


def test_effort_lies_in_the_minutes_the_recordings_cover(season: dict[str, Any]) -> None:
    minutes = _query(season["db"], """SELECT strftime(minute_utc, '%Y-%m-%d %H:%M'), analysed_s FROM unit_effort
                                      WHERE unit_id = 'site-B' ORDER BY 1""")
    assert minutes == [("2024-05-03 23:59", pytest.approx(15.0, abs=0.01)),
                       ("2024-05-04 00:00", pytest.approx(15.0, abs=0.01))]


def test_detections_are_filed_under_their_site_at_the_recordings_time(season: dict[str, Any]) -> None:
    results = season["root"] / "results" / "detections.csv"
    with open(results, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    stored = _query(season["db"], "SELECT unit_id, label, utc FROM detections")
    assert len(stored) == len(table) > 0
    expected = sorted((Path(r["file"]).parent.name, r["label"],
                       datetime.fromisoformat(r["start_utc"]).replace(tzinfo=None)) for r in table)
    assert sorted(stored) == expected


def test_a_bat_rate_recording_is_warned_about_by_name_with_the_lost_band(season: dict[str, Any]) -> None:
    warnings = [line for line in season["analyzed"].splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "site-C/20240504_011500.WAV" in warnings[0], season["analyzed"]
    assert f"{BAT_RATE} Hz" in warnings[0] and f"from 14000 to {BAT_RATE // 2} Hz" in warnings[0]


def test_unit_id_overrides_the_folder(tmp_path: Path, example_bundle: Path, example_labels: tuple[Path, Path]) -> None:
    _write_recordings(tmp_path / "sd")
    _cli("analyze", str(tmp_path / "sd" / "site-A"), "--labels", str(example_labels[0]), "--bundle",
         str(example_bundle), "--out", str(tmp_path / "results"), "--embeddings", str(tmp_path / "emb"),
         "--unit-id", "moth-07", "--workers", "1")
    _cli("logs", "collect", str(tmp_path / "emb"), "--into", str(tmp_path / "db.duckdb"))
    assert _query(tmp_path / "db.duckdb", "SELECT DISTINCT unit_id FROM effort") == [("moth-07",)]
    assert _query(tmp_path / "db.duckdb", "SELECT count(*) FROM detections") == [(0,)]  # no threshold: no detections


def test_the_reports_figures_are_the_databases_in_chromium(season: dict[str, Any], browser: Any) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((season["root"] / "report.html").as_uri())
        page.wait_for_selector("body[data-rendered]")
        header = page.evaluate("() => [...document.querySelectorAll('#health-table th')].map(c => c.innerText)")
        cells = page.evaluate("""() => [...document.querySelectorAll('#health-table tbody tr')]
                                 .map(r => [...r.querySelectorAll('td')].map(c => c.innerText))""")
        species = page.evaluate("""() => [...document.querySelectorAll('#species-table tbody tr')]
                                   .map(r => [r.cells[0].innerText, Number(r.cells[1].innerText)])""")
    finally:
        context.close()
    assert not errors
    shown = {row[0]: dict(zip(header, row)) for row in cells}
    summary = _summary(season)
    assert set(shown) == set(RECORDINGS)
    for site, row in shown.items():
        assert float(row["uptime h"]) == pytest.approx(float(summary[site]["uptime_h"]), abs=1e-3), site
        assert float(row["effort h"]) == pytest.approx(float(summary[site]["effort_h"]), abs=1e-3), site
        assert int(row["boots"]) == len(RECORDINGS[site]) and int(row["crashes"]) == 0, site
    counted = dict(_query(season["db"], "SELECT label, count(*) FROM detections GROUP BY label"))
    assert dict(species) == counted and sum(counted.values()) > 0


def test_review_takes_the_detections_of_every_site(season: dict[str, Any], example_bundle: Path,
                                                    example_labels: tuple[Path, Path]) -> None:
    out = season["root"] / "review"
    _cli("logs", "review", "--db", str(season["db"]), "--bundle", str(example_bundle), "--labels",
         str(example_labels[0]), "--detections", "--per-label", "50", "--out", str(out))
    with open(out / "review.csv", newline="", encoding="utf-8") as handle:
        reviewed = list(csv.DictReader(handle))
    detected = _query(season["db"], """
        SELECT w.window_id, d.label FROM detections d JOIN windows w
          ON w.unit_id = d.unit_id AND w.boot_id = d.boot_id AND w.stream = d.stream
         AND w.start_sample = d.peak_start_sample""")
    total = _query(season["db"], "SELECT count(*) FROM detections")[0][0]
    assert len(detected) == total, "every detection's window is archived"
    assert sorted((int(r["window_id"]), r["label"]) for r in reviewed) == sorted(detected)  # 50 per label: all
    assert {r["unit_id"] for r in reviewed} == set(RECORDINGS)
    assert all(r["source_path"] and r["audio"] for r in reviewed), "every reviewed window has its audio"


def test_birdnet_table_and_detection_history_from_analyze(season: dict[str, Any], example_bundle: Path,
                                                          example_labels: tuple[Path, Path]) -> None:
    import pandas as pd

    out = season["root"] / "formats"
    _cli("analyze", str(season["root"] / "sd"), "--labels", str(example_labels[0]), "--bundle", str(example_bundle),
         "--out", str(out), "--threshold", "-100", "--format", "csv,birdnet,occupancy", "--workers", "1")
    detections = pd.read_csv(out / "detections.csv")
    birdnet = pd.read_csv(out / "BirdNET_CombinedTable.csv")
    assert list(birdnet.columns) == ["Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File"]
    assert len(birdnet) == len(detections) > 0
    assert (birdnet["Common name"].tolist(), birdnet["File"].tolist()) == (
        detections["label"].tolist(), [str(Path(f).resolve()) for f in detections["file"]])
    assert birdnet["Confidence"].tolist() == pytest.approx(detections["score"].tolist(), abs=1e-4)
    days = ["2024-05-03", "2024-05-04"]
    listened = {"site-A": {"2024-05-03"}, "site-B": set(days), "site-C": {"2024-05-04"}}
    detections["site"] = [Path(f).parent.name for f in detections["file"]]
    detections["day"] = [d[:10] for d in detections["start_utc"]]
    for name in example_labels[0].read_text(encoding="utf-8").split():
        history = pd.read_csv(out / "detection_history" / f"{name}.csv", index_col="site")
        assert list(history.columns) == days and sorted(history.index) == sorted(RECORDINGS)
        for site in RECORDINGS:
            for day in days:
                value = history.loc[site, day]
                if day not in listened[site]:
                    assert pd.isna(value), (name, site, day)  # not listened: missing, never 0
                else:
                    hit = ((detections["site"] == site) & (detections["day"] == day)
                           & (detections["label"] == name)).any()
                    assert value == (1 if hit else 0), (name, site, day)
    # the same season from the database: logs export writes the same histories; rescore the same BirdNET rows
    exported = season["root"] / "exported"
    _cli("logs", "export", "--db", str(season["db"]), "--format", "birdnet,occupancy", "--out", str(exported))
    histories = sorted((exported / "detection_history").glob("*.csv"))
    assert histories, "the database's detected labels each have a history"  # (it does not know the list's others)
    for path in histories:
        assert path.read_text() == (out / "detection_history" / path.name).read_text()
    from_db = pd.read_csv(exported / "BirdNET_CombinedTable.csv")
    assert list(from_db.columns) == list(birdnet.columns) and len(from_db) == len(birdnet)
    assert sorted(from_db["Common name"]) == sorted(birdnet["Common name"])
    rescored = season["root"] / "rescored"
    _cli("logs", "rescore", "--db", str(season["db"]), "--bundle", str(example_bundle), "--labels",
         str(example_labels[0]), "--out", str(rescored), "--threshold", "-100", "--format", "csv,birdnet,occupancy")
    rescore_csv, rescore_birdnet = pd.read_csv(rescored / "detections.csv"), pd.read_csv(rescored / BIRDNET)
    assert len(rescore_birdnet) == len(rescore_csv) > 0
    assert rescore_birdnet["Common name"].tolist() == rescore_csv["label"].tolist()
    assert rescore_birdnet["Start (s)"].tolist() == pytest.approx(rescore_csv["start_s"].tolist())
    for name in example_labels[0].read_text(encoding="utf-8").split():  # every label of the list, sites = units
        assert (rescored / "detection_history" / f"{name}.csv").read_text() == \
            (out / "detection_history" / f"{name}.csv").read_text(), name
