"""A card written by `run --input FILE` tells the truth at the desk: its windows keep their recording, and health,
uptime and effort are on the recording's time base (not the wall clock of a --fast replay)."""

from __future__ import annotations

import csv
import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import soundfile as sf
from typer.testing import CliRunner

from desk.collect.findings import gap_text
from edge.cli import app

runner = CliRunner()
START = datetime(2024, 5, 3, 21, 0, 0)
"""The recording's start, from its AudioMoth-style name (read as UTC)."""


@pytest.fixture(scope="module")
def input_season(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path,
                 example_labels: tuple[Path, Path], toad_in_night: Path) -> tuple[Path, Path, Path]:
    """(database, recording, card) of one `run --input` of a 60 s AudioMoth-named recording, collected."""
    root = tmp_path_factory.mktemp("input_season")
    recording = root / "sd" / f"{START:%Y%m%d_%H%M%S}.WAV"
    recording.parent.mkdir()
    shutil.copy(toad_in_night, recording)
    thermal = root / "temp"
    thermal.write_text("41500\n", encoding="utf-8")
    card = root / "card"
    ran = runner.invoke(app, ["run", "--labels", str(example_labels[0]), "--bundle", str(example_bundle),
                              "--log-dir", str(card), "--threshold", "-100", "--input", str(recording), "--fast",
                              "--set", f"health.thermal_paths=[{thermal}]", "--set", "unit.unit_id=pond"])
    assert ran.exit_code == 0, ran.output
    db = root / "season.duckdb"
    collected = runner.invoke(app, ["logs", "collect", str(card), "--into", str(db)])
    assert collected.exit_code == 0, collected.output
    return db, recording, card


def test_windows_of_an_input_run_keep_their_recording(input_season: tuple[Path, Path, Path]) -> None:
    db, recording, _ = input_season
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT DISTINCT source_path FROM windows").fetchall()
        offsets = con.execute("SELECT min(source_offset), count(*) FROM windows").fetchone()
    assert rows == [(str(recording.resolve()),)]
    assert offsets is not None and offsets[0] == 0 and offsets[1] >= 10


def test_search_clips_cut_from_the_recording_and_say_what_they_could_not(
        input_season: tuple[Path, Path, Path], example_bundle: Path, toad_in_night: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    db, recording, _ = input_season
    out = tmp_path / "hits"
    found = runner.invoke(app, ["logs", "search", "--db", str(db), "--bundle", str(example_bundle), "--example",
                                f"{recording}@40", "--top", "3", "--out", str(out), "--clips"])
    assert found.exit_code == 0, found.output
    clips = sorted((out / "clips").glob("*.wav"))
    assert len(clips) == 3 and all(sf.info(c).duration == pytest.approx(10, abs=0.01) for c in clips)
    raven = next(out.glob("*.selection.table.txt")).read_text(encoding="utf-8").splitlines()
    begin_path = raven[0].split("\t").index("Begin Path")
    assert {line.split("\t")[begin_path] for line in raven[1:]} == {str(recording.resolve())}
    recording.rename(recording.with_suffix(".moved"))
    try:
        with caplog.at_level(logging.WARNING):
            moved = runner.invoke(app, ["logs", "search", "--db", str(db), "--bundle", str(example_bundle),
                                        "--example", f"{toad_in_night}@40", "--top", "2", "--out",
                                        str(tmp_path / "moved"), "--clips"])
    finally:
        recording.with_suffix(".moved").rename(recording)
    assert moved.exit_code == 0, moved.output
    assert "2 of 2 hit(s) have no recording on disk" in caplog.text
    assert not list((tmp_path / "moved" / "clips").glob("*.wav"))


def test_health_uptime_and_effort_share_the_recordings_time(input_season: tuple[Path, Path, Path],
                                                            tmp_path: Path) -> None:
    db, _, _ = input_season
    with duckdb.connect(str(db), read_only=True) as con:
        health = con.execute("SELECT min(utc), max(utc), max(temperature_c) FROM health").fetchone()
    assert health is not None
    assert START <= health[0] <= health[1] <= START + timedelta(seconds=61)
    assert health[2] == pytest.approx(41.5)
    summary = runner.invoke(app, ["logs", "summary", "--db", str(db), "--out", str(tmp_path / "summary")])
    assert summary.exit_code == 0, summary.output
    with open(tmp_path / "summary" / "SUMMARY.csv", encoding="utf-8") as table:
        row = next(r for r in csv.DictReader(table) if r["unit_id"] == "pond")
    assert float(row["uptime_h"]) * 3600 == pytest.approx(60, abs=2)
    assert float(row["effort_h"]) * 3600 == pytest.approx(60, abs=1)
    assert float(row["effort_fraction"]) == pytest.approx(1, abs=0.04)
    assert float(row["max_temperature_c"]) == pytest.approx(41.5)


def test_a_gap_across_midnight_names_its_end_date() -> None:
    assert gap_text(datetime(2024, 5, 1, 3, 4), datetime(2024, 5, 3, 3, 15)) == "2024-05-01 03:04-2024-05-03 03:15"
    assert gap_text(datetime(2024, 5, 1, 21, 5), datetime(2024, 5, 2, 21, 0)) == "2024-05-01 21:05-2024-05-02 21:00"
    assert gap_text(datetime(2024, 5, 1, 3, 4), datetime(2024, 5, 1, 3, 15)) == "2024-05-01 03:04-03:15"
