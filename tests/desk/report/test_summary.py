"""``logs summary``: sample-exact uptime and times, and hour-of-day rates per unit in its local time."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from desk.collect.ingest import collect
from edge.cli import app
from tests.cardlog_support import T0, write_card

CHICAGO = {"config_hash": "cfg-1", "config": {"schedule": {"mode": "always", "timezone": "America/Chicago"}}}


def summarise(tmp_path: Path, *cards: Path) -> Path:
    db = tmp_path / "db.duckdb"
    collect(list(cards), db)
    out = tmp_path / "summary"
    result = CliRunner().invoke(app, ["logs", "summary", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_fully_analysed_run_has_effort_fraction_one_and_exact_first_last_times(tmp_path: Path) -> None:
    """Starts 40 s into a minute, 60 s of audio: minute padding made this 0.5 and rounded the span outward."""
    write_card(tmp_path / "a", "AM-01", start=T0 + timedelta(seconds=40), minutes=1)
    (unit,) = rows(summarise(tmp_path, tmp_path / "a") / "SUMMARY.csv")
    assert float(unit["effort_fraction"]) == pytest.approx(1.0)
    assert float(unit["uptime_h"]) == pytest.approx(60 / 3600, abs=1e-4)
    assert unit["first_utc"] == "2024-05-01T21:00:40.000Z"
    assert unit["last_utc"] == "2024-05-01T21:01:40.000Z"
    assert unit["crashes"] == "0"


def test_overlapping_boots_of_one_unit_do_not_count_time_twice(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-01", minutes=3)
    write_card(tmp_path / "b", "AM-01", minutes=3, start=T0 + timedelta(minutes=1))
    (unit,) = rows(summarise(tmp_path, tmp_path / "a", tmp_path / "b") / "SUMMARY.csv")
    assert float(unit["uptime_h"]) == pytest.approx(4 / 60, abs=1e-4)
    assert float(unit["effort_fraction"]) == pytest.approx(1.0)


def test_hour_of_day_is_per_unit_in_local_time_and_unlistened_hours_are_not_zero(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-01", minutes=10, boot_info=CHICAGO)  # 21:00 UTC = 16:00 CDT
    write_card(tmp_path / "b", "AM-02", minutes=10, start=T0 + timedelta(hours=3))  # no zone recorded: UTC
    table = rows(summarise(tmp_path, tmp_path / "a", tmp_path / "b") / "detections_by_hour.csv")
    toad = {(r["unit_id"], int(r["local_hour"])): r for r in table if r["label"] == "toad"}
    assert len(toad) == 2 * 24, "one row per unit and hour, not pooled"
    chicago = toad[("AM-01", 16)]
    assert chicago["time_zone"] == "America/Chicago" and float(chicago["analysed_h"]) == pytest.approx(1 / 6, abs=1e-3)
    assert int(chicago["detections"]) == 40
    assert float(chicago["detections_per_analysed_h"]) == pytest.approx(240, rel=1e-3)
    assert toad[("AM-01", 21)]["detections_per_analysed_h"] == "", "21 UTC is not a local hour it listened in"
    assert toad[("AM-01", 3)]["detections_per_analysed_h"] == "", "not listened, not 0"
    assert toad[("AM-02", 0)]["time_zone"] == "UTC" and int(toad[("AM-02", 0)]["detections"]) == 40


def colours_in(png: Path) -> set[tuple[int, int, int]]:
    from matplotlib import image

    pixels = (image.imread(str(png))[..., :3] * 255).round().astype(int).reshape(-1, 3)
    return {tuple(p) for p in pixels.tolist()}


def test_effort_plot_tells_scheduled_off_from_gaps(tmp_path: Path) -> None:
    """Today's plot paints both white; a gap (no audio while on) and the schedule's off time must differ."""
    write_card(tmp_path / "a", "AM-01", minutes=60, streams=2, pause_minutes=120)
    write_card(tmp_path / "b", "AM-02", minutes=60, streams=2, pause_minutes=120, scheduled_pauses=True)
    colours = colours_in(summarise(tmp_path, tmp_path / "a", tmp_path / "b") / "effort_over_time.png")
    gap, scheduled_off, listened = (253, 174, 97), (198, 219, 239), (26, 152, 80)
    assert {gap, scheduled_off, listened} <= colours
