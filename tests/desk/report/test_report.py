"""``logs report``: a real season (card writer -> ``logs collect``) rendered and opened in headless Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from desk.collect.database import connect
from desk.report.season import load_season
from edge.cli import app
from tests.conftest import SHARED_AUDIO
from tests.report_season import write_season

REMOTE = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, ["logs", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collected database of a three-unit season written through the real card writer."""
    root = tmp_path_factory.mktemp("season")
    cards = write_season(root / "cards")
    db = root / "season.duckdb"
    invoke("collect", *map(str, cards), "--into", str(db))
    return db


@pytest.fixture(scope="module")
def confidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cal") / "confidence.json"
    path.write_text(json.dumps({"schema": 1, "model_sha256": "0" * 64, "labels_key": "k", "labels": {
        "toad": {"fitted": True, "reason": None, "a": -8.0, "b": 14.0, "n_yes": 30, "n_no": 12, "n_unsure": 3,
                 "thresholds": {"0.9": {"score": 0.728, "ci": [0.69, 0.77]}}},
        "wood frog": {"fitted": False, "reason": "only 4 reviews", "a": 0, "b": 0, "n_yes": 3, "n_no": 1,
                      "n_unsure": 0, "thresholds": {}}}}))
    return path


@pytest.fixture(scope="module")
def report(season: Path, confidence: Path) -> Path:
    out = season.parent / "report.html"
    invoke("report", "--db", str(season), "--out", str(out), "--confidence", str(confidence), "--clips")
    return out


def test_the_report_is_one_file_with_no_remote_resource(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert not REMOTE.search(html)
    assert "data:audio/mpeg;base64," in html and "data:image/jpeg;base64," in html, "clips are inlined"
    assert report.stat().st_size < 2_000_000


def test_unlistened_hours_are_not_zero_and_local_time_follows_each_units_zone(season: Path) -> None:
    con = connect(season, read_only=True)
    try:
        data = load_season(con)
    finally:
        con.close()
    assert data.zones == ["America/Chicago", "Europe/Berlin", "UTC"]
    assert data.zone_from_config == [True, True, False]
    chicago = data.units.index("AM-01")
    listened = data.effort_hour_s[chicago] > 0
    local = data.local_hour_of_day(chicago)
    assert set(local[listened]) == set(range(18, 24)) | set(range(0, 6)), "18:00-06:00 in Chicago time"
    toad = data.species.index("toad")
    assert data.counts[chicago, toad][~listened].sum() == 0


def test_bad_calibration_file_is_one_clear_line(season: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"schema": 7, "labels": {}}))
    result = runner.invoke(app, ["logs", "report", "--db", str(season), "--out", str(tmp_path / "r.html"),
                                 "--confidence", str(bad)])
    assert result.exit_code == 2 and "confidence schema 7" in result.output and "hint" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r.html").exists()


# ------------------------------------------------------------------------------------------- in the browser

class Page:
    """The report open in Chromium, with every console message, page error and network request recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1300, "height": 1800})
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-rendered]")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    @property
    def network(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file:", "data:", "blob:"))]

    def charts(self) -> list[dict[str, Any]]:
        """Every visible chart canvas: its id, marks drawn and how many pixels are not background."""
        return self.page.evaluate("""() => [...document.querySelectorAll('canvas.chart')]
            .filter(c => c.offsetParent !== null).map(c => {
                const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let ink = 0;
                for (let i = 0; i < px.length; i += 4) if (px[i] < 240 || px[i + 1] < 240 || px[i + 2] < 240) ink++;
                return {id: c.id || c.className, marks: Number(c.dataset.marks || 0), ink, w: c.width};
            })""")

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector))

    def rows(self, table: str) -> int:
        return int(self.page.get_attribute(f"#{table}", "data-rows") or 0)

    def select(self, selector: str, value: str) -> None:
        before = self.page.get_attribute("body", "data-rendered")
        self.page.select_option(selector, value)
        self.page.wait_for_function(f"document.body.dataset.rendered !== '{before}'")

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def page(browser: Any, report: Path) -> Iterator[Page]:
    opened = Page(browser, report)
    yield opened
    opened.close()


def test_every_chart_renders_with_no_console_error_and_no_network_request(page: Page, tmp_path: Path) -> None:
    charts = page.charts()
    ids = {c["id"] for c in charts}
    assert {"heat-days", "heat-hours", "accum", "temperature", "disk"} <= ids
    assert sum(c["id"] == "chart strip" for c in charts) == 3, "one effort strip per unit"
    empty = [c for c in charts if c["marks"] == 0 or c["ink"] < 50]
    assert not empty, f"charts drawn empty: {empty}"
    assert page.rows("species-table") == 3 and page.rows("health-table") == 3
    assert page.rows("drift-table") >= 1, "the units' thresholds and zones differ"
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert_not_blank(shot)
    assert page.problems == [] and page.network == []


def test_request_interception_is_live(browser: Any, tmp_path: Path) -> None:
    """The zero-request assertions mean something: the same harness sees a page that does reach out."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text("<html><body><img src='http://example.invalid/x.png'><script>"
                     "document.body.dataset.rendered = '1'</script></body></html>")
    page = Page(browser, leaky)
    try:
        page.page.wait_for_function("() => document.images[0].complete")
        assert page.network and page.network[0].startswith("http://example.invalid/")
    finally:
        page.close()


def test_not_listened_cells_are_drawn_as_not_listened_never_zero(page: Page) -> None:
    page.select("#f-unit", "0")  # AM-01 listens 18:00-06:00 Chicago time only
    hours = page.page.evaluate("""() => { const c = document.getElementById('heat-hours');
        const n = c.layout.cols; return c.layout.rows.map((r, i) => Array.from(c.values.slice(i * n, (i + 1) * n),
        v => Number.isNaN(v) ? null : v)); }""")
    for row in hours:
        assert all(v is None for v in row[6:18]), "daytime: not listened"
        assert all(v is not None for v in row[:6] + row[18:]), "night: a rate, possibly 0"
    toad = page.page.evaluate("() => document.getElementById('heat-hours').layout.rows.indexOf('toad')")
    assert hours[toad][3] == 0 and hours[toad][21] > 0, "listened without detections is a real 0"
    page.select("#f-time", "utc")
    utc = page.page.evaluate("() => Array.from(document.getElementById('heat-hours').values.slice(0, 24), "
                             "v => !Number.isNaN(v))")
    assert utc == [h >= 23 or h < 11 for h in range(24)], "in UTC the same nights are 23:00-11:00 (CDT = UTC-5)"


def test_unit_species_and_date_filters_change_what_is_shown(page: Page) -> None:
    everything = page.text("#f-summary")
    strips = len(page.charts())
    page.select("#f-unit", "1")
    assert page.text("#f-summary") != everything
    assert sum(c["id"] == "chart strip" for c in page.charts()) == 1 and len(page.charts()) < strips
    assert page.text("#health-table").count("AM-0") == 1
    page.select("#f-unit", "")
    page.select("#f-species", "1")  # toad
    assert page.rows("species-table") == 1 and "toad" in page.text("#species-table")
    assert page.page.is_visible("#species-page") and page.text("#sp-title") == "toad"
    species_charts = {c["id"]: c for c in page.charts()}
    for chart in ("sp-hours", "sp-days", "sp-scores"):
        assert species_charts[chart]["marks"] > 0 and species_charts[chart]["ink"] > 50, chart
    assert "P≥0.9 at score 0.728" in page.text("#sp-cal-caption")
    playable = page.page.evaluate("""async () => Promise.all([...document.querySelectorAll('#sp-clips audio')]
        .map(a => a.readyState >= 1 ? a.duration : new Promise(r => { a.onloadedmetadata = () => r(a.duration);
                                                                     a.onerror = () => r(-1); a.load(); })))""")
    assert playable and all(d > 1 for d in playable), f"clip durations {playable}"
    assert page.page.evaluate("() => [...document.querySelectorAll('#sp-clips img')].every(i => i.naturalWidth > 0)")
    before = page.text("#f-summary")
    page.page.fill("#f-from", "2024-05-02")
    page.page.dispatch_event("#f-from", "change")
    page.page.wait_for_function(f"!document.getElementById('f-summary').textContent.includes({before!r})")
    assert "2024-05-02 to" in page.text("#f-summary")
    assert page.problems == [] and page.network == []


def assert_not_blank(png: Path) -> None:
    from matplotlib import image

    pixels = image.imread(str(png))[..., :3]
    assert pixels.shape[0] > 1000 and pixels.shape[1] > 800
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3)[::7], axis=0))
    assert pixels.std() > 0.05 and colours > 50, "screenshot looks blank"


def test_an_empty_collection_is_one_clear_line(tmp_path: Path) -> None:
    connect(tmp_path / "empty.duckdb").close()
    result = runner.invoke(app, ["logs", "report", "--db", str(tmp_path / "empty.duckdb"),
                                 "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "no effort or detections" in result.output and "logs collect" in result.output
    assert "Traceback" not in result.output


def test_a_unit_that_heard_nothing_renders_without_errors(browser: Any, tmp_path: Path) -> None:
    from desk.collect.ingest import collect
    from edge.card.cardlog import CardLog, UnitIdentity
    from tests.cardlog_support import T0

    log = CardLog(tmp_path / "card", UnitIdentity("AM-09", "quiet"), 48_000, {})
    log.open_stream(T0, 0, "ntp")
    log.effort(0, 48_000 * 600)
    log.close()
    collect([tmp_path / "card"], tmp_path / "db.duckdb")
    invoke("report", "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "quiet.html"))
    page = Page(browser, tmp_path / "quiet.html")
    try:
        assert page.problems == [] and page.network == []
        assert page.rows("species-table") == 0 and "0 detections in 0.2 analysed hours" in page.text("#f-summary")
        assert [c["marks"] for c in page.charts() if c["id"] == "chart strip"] == [1], "its 10 listened minutes"
    finally:
        page.close()


def test_detections_without_a_card_clip_take_their_audio_from_the_archived_recording(tmp_path: Path) -> None:
    """Offline analysis keeps no clips; the archive (its WindowStore) names the recording."""
    from desk.archive.windows import open_store
    from desk.collect.ingest import collect
    from desk.report.clips import select_clips
    from edge.card.cardlog import CardLog, UnitIdentity
    from edge.stream.detector import DetectionEvent
    from tests.cardlog_support import T0
    from tests.report_season import RATE, WINDOW

    recording = SHARED_AUDIO / "Nachtzuster__BirdNET-Pi" / "Pica pica_30s.wav"
    log = CardLog(tmp_path / "card", UnitIdentity("AM-05", "offline"), RATE, {})
    log.open_stream(T0, 0, "ntp")
    log.effort(0, 30 * RATE)
    log.detections([DetectionEvent(10 * RATE, 10 * RATE + WINDOW, "magpie", 0.8, 0.1, 10 * RATE, 1)])
    boot = log.boot_id
    log.close()
    db = tmp_path / "db.duckdb"
    collect([tmp_path / "card"], db)
    with open_store(db) as store:
        con = connect(db, read_only=True)
        try:
            assert select_clips(con, store) == {}, "no clip on the card and no archived window: nothing to show"
        finally:
            con.close()
    con = connect(db)
    try:  # one archived window (the table collect made; its embedding does not matter here)
        con.execute("""INSERT INTO windows (window_id, unit_id, deployment_id, boot_id, stream, start_sample,
                       end_sample, sample_rate, source_path, source_offset, model_sha256)
                       VALUES (1, 'AM-05', 'offline', ?, 1, ?, ?, ?, ?, ?, 'x')""",
                    [boot, 10 * RATE, 10 * RATE + WINDOW, RATE, str(recording), 10 * RATE])
    finally:
        con.close()
    with open_store(db) as store:  # the report asks the archive through its door, never its tables
        con = connect(db, read_only=True)
        try:
            (clip,) = select_clips(con, store)["magpie"]
        finally:
            con.close()
    assert clip["source"] == "recording" and clip["kind"] == "top" and clip["unit"] == "AM-05"
    assert clip["audio"].startswith("data:audio/mpeg;base64,") and len(clip["audio"]) > 5_000


def test_local_offsets_follow_daylight_saving_within_the_day() -> None:
    from datetime import datetime, timezone

    from desk.report.timezones import hourly_offsets_min

    offsets = hourly_offsets_min("Europe/Berlin", datetime(2024, 3, 30, tzinfo=timezone.utc), 72)
    assert list(offsets[24:27]) == [60, 120, 120], "clocks go forward at 01:00 UTC on 31 March"
    assert set(offsets[:24]) == {60} and set(offsets[48:]) == {120}
    assert set(hourly_offsets_min("Asia/Kolkata", datetime(2024, 3, 30, tzinfo=timezone.utc), 24)) == {330}
