"""``logs report`` over seasons years apart (two cards three years apart, two databases read as one archive): the
report is built, its numbers are the sum of the per-season reports, and the days between the seasons are skipped
(the charts jump, with a marker) rather than drawn as years of "not listened"."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from desk.collect.database import connect
from desk.report.effort_strip import GAP, LISTENED, NO_RECORD, boot_spans, minute_states
from desk.report.season import SEASON_BREAK_DAYS, load_season
from edge.cli import app
from tests.desk.report.test_report import Page
from tests.report_season import UnitWriter

runner = CliRunner()
SEASONS = {"2022": (("AM-01", "Europe/Berlin", datetime(2022, 5, 1, 18, tzinfo=timezone.utc), 30),
                    ("AM-02", None, datetime(2022, 5, 2, 6, tzinfo=timezone.utc), 10)),
           "2025": (("AM-01", "Europe/Berlin", datetime(2025, 6, 10, 20, tzinfo=timezone.utc), 20),)}
"""Per season, its units: (unit id, zone, first hour on, hours listened); AM-01 ran both seasons."""
DATA = re.compile(r'<script id="season-data" type="application/json">(.*?)</script>', re.DOTALL)


def cli(*args: str) -> None:
    result = runner.invoke(app, ["logs", *args])
    assert result.exit_code == 0, result.output


def write_unit(card: Path, unit: str, zone: str | None, start: datetime, hours: int) -> None:
    """One clean boot listening ``hours`` from ``start``, with detections, through the real card writer."""
    writer = UnitWriter(card, unit, zone, clips=False)
    log = writer.boot(start)
    log.event("start")
    log.open_stream(start, 0, "ntp")
    writer.listen(log, 0, start, hours)
    log.event("stop", exit_code=0)
    log.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("years")
    found: dict[str, Path] = {}
    for year, units in SEASONS.items():
        cards = [root / "cards" / year / unit for unit, *_ in units]
        for card, (unit, zone, start, hours) in zip(cards, units):
            write_unit(card, unit, zone, start, hours)
        found[year] = root / f"{year}.duckdb"
        cli("collect", *map(str, cards), "--into", str(found[year]))
    for name, dbs in (("2022", ["2022"]), ("2025", ["2025"]), ("both", ["2022", "2025"])):
        found[f"{name}.html"] = root / f"{name}.html"
        cli("report", *[a for db in dbs for a in ("--db", str(found[db]))], "--out", str(found[f"{name}.html"]))
    return found


def read_back(page: Path) -> dict[str, Any]:
    """What the page shows, from its embedded data: units, detections per label, analysed hours per unit."""
    match = DATA.search(page.read_text(encoding="utf-8"))
    assert match, "the page embeds its data"
    data = json.loads(match.group(1))
    shape = len(data["units"]), len(data["species"]), data["hours"]

    def array(name: str, dtype: Any) -> np.ndarray:
        return np.frombuffer(gzip.decompress(base64.b64decode(data["arrays"][name])), dtype=dtype)

    counts = array("counts", "<u2").reshape(shape)
    effort = array("effort", "<u2").reshape(shape[0], shape[2])
    return {"data": data, "units": [u["id"] for u in data["units"]],
            "per_label": Counter({s: int(counts[:, i].sum()) for i, s in enumerate(data["species"])}),
            "effort_s": Counter({u["id"]: int(effort[i].sum()) for i, u in enumerate(data["units"])})}


def test_seasons_three_years_apart_report_as_the_sum_of_each(archive: dict[str, Path]) -> None:
    old, new, both = (read_back(archive[f"{n}.html"]) for n in ("2022", "2025", "both"))
    assert both["units"] == ["AM-01", "AM-02"], "AM-01 of both seasons is one recorder"
    assert both["per_label"] == old["per_label"] + new["per_label"] and sum(both["per_label"].values()) > 0
    assert both["data"]["detections"] == old["data"]["detections"] + new["data"]["detections"]
    assert both["effort_s"] == old["effort_s"] + new["effort_s"]
    assert both["effort_s"]["AM-01"] == (30 + 20) * 3600, "every listened hour of both seasons, nothing else"
    assert both["data"]["seasons"] == [["2022-05-01", "2022-05-02"], ["2025-06-10", "2025-06-11"]]
    assert both["data"]["hours"] == 4 * 24, "the arrays hold the four days with records, not three years"
    assert old["data"]["seasons"] == [["2022-05-01", "2022-05-02"]]


def test_the_summary_plots_seasons_years_apart(archive: dict[str, Path]) -> None:
    out = archive["2022"].parent / "summary"
    cli("summary", "--db", str(archive["2022"]), "--db", str(archive["2025"]), "--out", str(out))
    from matplotlib import image

    effort = image.imread(str(out / "effort_over_time.png"))[..., :3]
    assert effort.std() > 0.05, "the effort plot over both seasons is drawn"


def test_one_season_with_quiet_weeks_stays_one_contiguous_range(tmp_path: Path) -> None:
    """A stretch without records shorter than a season break keeps its days (drawn as not listened)."""
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    later = start + timedelta(days=SEASON_BREAK_DAYS - 2)
    write_unit(tmp_path / "a", "AM-01", None, start, 2)
    write_unit(tmp_path / "b", "AM-02", None, later, 2)
    cli("collect", str(tmp_path / "a"), str(tmp_path / "b"), "--into", str(tmp_path / "db.duckdb"))
    con = connect(tmp_path / "db.duckdb")
    try:
        season = load_season(con)
    finally:
        con.close()
    assert season.hours == (SEASON_BREAK_DAYS - 1) * 24 and len(season.seasons) == 1
    assert season.minute_index(later.replace(tzinfo=None)) == (SEASON_BREAK_DAYS - 2) * 24 * 60


def test_a_gap_across_a_season_break_ends_where_it_ended(tmp_path: Path) -> None:
    """A unit that lost its microphone at the end of May and got it back 92 days later: the gap runs across the
    skipped days and ends at the reconnection, not as many minute columns on (the rest of the next season)."""
    first, back = datetime(2022, 5, 1, 18, tzinfo=timezone.utc), datetime(2022, 8, 1, 20, tzinfo=timezone.utc)
    writer = UnitWriter(tmp_path / "am01", "AM-01", None, clips=False)
    log = writer.boot(first)
    log.event("start")
    log.open_stream(first, 0, "ntp")
    sample = writer.listen(log, 0, first, 4)
    lost = first + timedelta(hours=4)
    log.event("gap", sample=sample, end_sample=sample + 1, seconds=(back - lost).total_seconds())
    log.open_stream(back, sample + 1, "ntp")
    writer.listen(log, sample + 1, back, 2)
    log.event("stop", exit_code=0)
    log.close()
    write_unit(tmp_path / "am02", "AM-02", None, datetime(2022, 8, 1, tzinfo=timezone.utc), 48)
    cli("collect", str(tmp_path / "am01"), str(tmp_path / "am02"), "--into", str(tmp_path / "db.duckdb"))
    con = connect(tmp_path / "db.duckdb")
    try:
        season = load_season(con)
        states = minute_states(con, season, boot_spans(con, datetime(2000, 1, 1), datetime(2100, 1, 1)))
    finally:
        con.close()
    assert len(season.seasons) == 2, "precondition: the 92 days between are a season break"
    am01 = states[season.units.index("AM-01")]
    column = season.minute_index
    after_break = column(datetime(2022, 8, 1))
    assert (am01[column(datetime(2022, 5, 1, 22)):after_break] == GAP).all(), "the rest of May 1 is in the gap"
    assert (am01[after_break:column(datetime(2022, 8, 1, 20))] == GAP).all(), "so is Aug 1 until it came back"
    assert (am01[column(datetime(2022, 8, 1, 20)):column(datetime(2022, 8, 1, 22))] == LISTENED).all()
    assert (am01[column(datetime(2022, 8, 1, 22, 1)):] == NO_RECORD).all(), "nothing is known after its stop"


def test_the_page_jumps_between_seasons_and_reads_the_sum(browser: Any, archive: dict[str, Path]) -> None:
    totals = []
    for name in ("2022", "2025", "both"):
        page = Page(browser, archive[f"{name}.html"])
        try:
            assert page.problems == [] and page.network == []
            summary = re.search(r"(\d+) detections in ([\d.]+) analysed hours on (\d+) unit", page.text("#f-summary"))
            assert summary, page.text("#f-summary")
            totals.append((int(summary[1]), float(summary[2])))
            if name == "both":
                overview = page.text("#overview")
                assert "in 2 seasons (2022-05-01 to 2022-05-02, 2025-06-10 to 2025-06-11" in overview, overview
                columns = page.page.evaluate("() => document.getElementById('heat-days').layout.cols")
                assert columns <= 8, "the days between the seasons are not columns of the day chart"
                labels = page.page.evaluate("""() => { const c = document.getElementById('heat-days');
                    return Array.from({length: c.layout.cols}, (_, i) => c.layout.colLabel(i)); }""")
                assert "… 2025-06-09" in labels, f"the jump between seasons is marked: {labels}"
                strips = [c for c in page.charts() if c["id"] == "chart strip"]
                assert len(strips) == 2 and all(c["marks"] > 0 for c in strips)
        finally:
            page.close()
    assert totals[2] == (totals[0][0] + totals[1][0], pytest.approx(totals[0][1] + totals[1][1], abs=0.11))
