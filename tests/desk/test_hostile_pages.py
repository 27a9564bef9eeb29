"""The desk's offline pages (report.html, review.html) against hostile strings, in real Chromium.

Unit ids, labels and file names come from cards and folders nobody here controls. Fed ``<!--<script>``,
``</script>``, quotes and event-handler attributes, each page must run nothing but its own script (its CSP
allows that one by hash and blocks every request), and still show every row with the string as text.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from desk.review.page import ReviewItem, write_review_page
from desk.review.snippets import SNIPPET_BUDGET_BYTES, Snippet
from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.governor import StoragePolicy
from edge.cli import app
from edge.stream.detector import DetectionEvent

PWN = "window.__pwned = (window.__pwned || 0) + 1"
HOSTILE = [
    "<!--<script>",
    f"</script><script>{PWN}</script>",
    f"\"'><img src=x onerror=\"{PWN}\">",
    f"<svg onload='{PWN}'>&amp;</svg>",
]
RATE = 48_000
OPEN_BUDGET_S = 3.0
"""A 1 000-window review must be usable this soon after it is opened."""
OPEN_TRIES = 3
"""The page's own cost is the fastest of a few opens: the machine is shared, and others' load is not ours."""


class Opened:
    """A page open in Chromium: page errors, CSP violations and every non-local request recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.context = browser.new_context()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        started = time.perf_counter()
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-rendered]")
        self.seconds = time.perf_counter() - started

    def _route(self, route: Any) -> None:
        if not route.request.url.startswith(("file:", "data:", "blob:")):
            self.requests.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def pwned(self) -> int:
        return int(self.page.evaluate("() => window.__pwned || 0"))

    def close(self) -> None:
        self.context.close()


def _hostile_season(cards: Path) -> None:
    """One card per hostile unit id, each detecting every hostile label."""
    start = datetime(2024, 5, 1, 3, tzinfo=timezone.utc)
    for n, unit in enumerate(HOSTILE):
        log = CardLog(cards / f"sd{n}", UnitIdentity(unit, "marsh"), RATE, {"config": {"analysis": {}}},
                      StoragePolicy(0, 0), boot_id=f"20240501T030000Z-{n:06d}", wall_clock=lambda: start)
        log.open_stream(start, 0, "ntp")
        log.effort(0, 600 * RATE)
        log.detections([DetectionEvent(k * 10 * RATE, (k + 1) * 10 * RATE, label, 0.5 + k / 10, 0.1,
                                       k * 10 * RATE, 1) for k, label in enumerate(HOSTILE)])
        log.close()


def test_hostile_unit_ids_and_labels_run_nothing_in_the_report(tmp_path: Path, browser: Any) -> None:
    _hostile_season(tmp_path / "cards")
    db, report = tmp_path / "season.duckdb", tmp_path / "report.html"
    runner = CliRunner()
    cards = sorted(str(p) for p in (tmp_path / "cards").iterdir())
    assert runner.invoke(app, ["logs", "collect", *cards, "--into", str(db)]).exit_code == 0
    result = runner.invoke(app, ["logs", "report", "--db", str(db), "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert "unsafe-inline' ; script" not in report.read_text(encoding="utf-8")
    opened = Opened(browser, report)
    try:
        units = opened.page.eval_on_selector_all("#health-table tbody tr",
                                                 "rows => rows.map(r => r.cells[0].innerText)")
        species = opened.page.eval_on_selector_all("#species-table tbody tr",
                                                   "rows => rows.map(r => r.cells[0].innerText)")
        assert opened.pwned() == 0 and opened.errors == [] and opened.requests == []
    finally:
        opened.close()
    assert sorted(units) == sorted(HOSTILE)
    assert sorted(species) == sorted(HOSTILE)


def test_the_reports_csp_blocks_a_script_that_is_not_its_own(tmp_path: Path, browser: Any) -> None:
    """The control: the same page with one more inline script (as an injection would add) does not run it."""
    _hostile_season(tmp_path / "cards")
    db, report = tmp_path / "season.duckdb", tmp_path / "report.html"
    runner = CliRunner()
    cards = sorted(str(p) for p in (tmp_path / "cards").iterdir())
    assert runner.invoke(app, ["logs", "collect", *cards, "--into", str(db)]).exit_code == 0
    assert runner.invoke(app, ["logs", "report", "--db", str(db), "--out", str(report)]).exit_code == 0
    html = report.read_text(encoding="utf-8")
    report.write_text(html.replace("<body>", f"<body><script>{PWN}</script><img src=x onerror=\"{PWN}\">", 1),
                      encoding="utf-8")
    opened = Opened(browser, report)
    try:
        assert opened.pwned() == 0 and opened.page.evaluate("() => document.body.dataset.rendered") is not None
    finally:
        opened.close()


def _recording(path: Path, seconds: float = 10.0) -> Path:
    """White noise: the hardest audio to compress, so the size bound is the worst case."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = 0.3 * np.random.default_rng(3).standard_normal(round(seconds * RATE)).astype(np.float32)
    sf.write(path, noise, RATE, subtype="PCM_16")
    return path


def _items(source: Path, n: int, units: list[str], labels: list[str]) -> list[ReviewItem]:
    start = datetime(2024, 5, 1, 3)
    return [ReviewItem(i + 1, units[i % len(units)], str(start + timedelta(seconds=10 * i)),
                       str(start + timedelta(seconds=10 * i + 10)), labels[i % len(labels)], float(i % 97) / 10,
                       str(source), 0.0, 10.0, f"space|{units[i % len(units)]}|boot|1|{480_000 * i}")
            for i in range(n)]


def test_hostile_strings_and_file_names_run_nothing_in_the_review_page(tmp_path: Path, browser: Any) -> None:
    source = _recording(tmp_path / "<" / "script>'\"<!--.wav")  # the path holds "</script>" and quotes
    assert "</script>" in str(source)
    items = _items(source, 8, HOSTILE, HOSTILE[::-1])
    page = tmp_path / "review.html"
    write_review_page(page, items, "key", "space")
    opened = Opened(browser, page)
    try:
        shown = opened.page.eval_on_selector_all("section.item", """els => els.map(e => [
            e.querySelector('b').textContent, e.querySelector('.unit').textContent,
            e.querySelector('.meta').textContent])""")
        assert opened.pwned() == 0 and opened.errors == [] and opened.requests == []
    finally:
        opened.close()
    assert [(label, unit) for label, unit, _ in shown] == [(i.label, i.unit_id) for i in items]
    assert all(str(source) in text for *_, text in shown)


def test_a_1000_window_review_opens_within_3_s_with_media_under_64_kb_each(tmp_path: Path, browser: Any) -> None:
    source = _recording(tmp_path / "noise.wav")
    items = _items(source, 1000, ["u1", "u2", "u3"], ["toad", "owl", "frog", "wren"])
    page = tmp_path / "review.html"
    progress: list[int] = []
    write_review_page(page, items, "key", "space", lambda done, total: progress.append(done))
    assert progress == list(range(1, 1001))
    seconds = []
    for _ in range(OPEN_TRIES - 1):
        tried = Opened(browser, page)
        seconds.append(tried.seconds)
        tried.close()
    opened = Opened(browser, page)
    seconds.append(opened.seconds)
    try:
        assert min(seconds) <= OPEN_BUDGET_S, f"opened in {', '.join(f'{s:.2f}' for s in seconds)} s"
        media = opened.page.evaluate("""() => { const i = document.querySelector('section.item.current');
            return [i.querySelector('audio').src, i.querySelector('img').src]; }""")
        assert Snippet(*media).bytes <= SNIPPET_BUDGET_BYTES
        duration = opened.page.evaluate("""() => new Promise((done, fail) => {
            const audio = document.querySelector('section.item.current audio');
            audio.addEventListener('loadedmetadata', () => done(audio.duration)); audio.onerror = fail;
            audio.preload = 'metadata'; audio.load(); })""")
        assert duration == pytest.approx(10.0, abs=0.1), "the browser decodes the window's audio"
        assert opened.page.locator("section.item").count() == 1000 and opened.errors == []
    finally:
        opened.close()


def test_filter_sort_and_next_unreviewed(tmp_path: Path, browser: Any) -> None:
    source = _recording(tmp_path / "rec.wav")
    items = _items(source, 12, ["u1", "u2"], ["toad", "owl", "frog"])
    page = tmp_path / "review.html"
    write_review_page(page, items, "key", "space")
    opened = Opened(browser, page)
    p = opened.page
    shown = "els => els.filter(e => !e.hidden).map(e => [e.querySelector('b').textContent, " \
            "Number(e.querySelector('.score').textContent)])"
    try:
        p.select_option("#f-label", "owl")
        owls = p.eval_on_selector_all("section.item", shown)
        assert [label for label, _ in owls] == ["owl"] * 4
        p.select_option("#f-sort", "desc")
        ranked = p.eval_on_selector_all("#items > section.item", shown)
        assert [s for _, s in ranked] == sorted((s for _, s in owls), reverse=True)
        p.keyboard.press("y")  # the best owl; the next owl is selected
        p.keyboard.press("n")
        p.keyboard.press("k")
        p.keyboard.press("k")  # back on the first, reviewed one
        p.keyboard.press("g")  # the next unreviewed is the third owl
        current = p.eval_on_selector("section.item.current", "e => Number(e.querySelector('.score').textContent)")
        assert current == ranked[2][1]
        assert p.text_content("#progress") == "2 / 4 reviewed"
    finally:
        opened.close()


def test_verdicts_follow_the_window_not_the_database_row(tmp_path: Path, browser: Any) -> None:
    """Window ids restart at 1 in every database: a second season's window 1 is not the first season's."""
    source = _recording(tmp_path / "rec.wav")
    first = _items(source, 3, ["u1"], ["toad"])
    other_season = [ReviewItem(**{**vars(i), "window_key": i.window_key.replace("boot", "other-boot")}) for i in first]
    context = browser.new_context()
    try:
        p = context.new_page()
        for name, items in (("a.html", first), ("b.html", other_season), ("c.html", first)):
            write_review_page(tmp_path / name, items, "key", "space")
        p.goto((tmp_path / "a.html").as_uri())
        p.wait_for_selector("body[data-rendered]")
        p.keyboard.press("y")
        p.goto((tmp_path / "b.html").as_uri())  # same window ids and label, other windows
        p.wait_for_selector("body[data-rendered]")
        assert p.text_content("#progress") == "0 / 3 reviewed"
        p.goto((tmp_path / "c.html").as_uri())  # the same windows again (a re-collected archive)
        p.wait_for_selector("body[data-rendered]")
        assert p.text_content("#progress") == "1 / 3 reviewed"
    finally:
        context.close()


@pytest.mark.parametrize("seconds", [10.0, 3.0])
def test_snippets_stay_under_the_budget_at_a_rate_the_model_hears(tmp_path: Path, seconds: float) -> None:
    from desk.review.snippets import SNIPPET_RATE, snippet

    made = snippet(_recording(tmp_path / "n.wav", seconds), 0.0, seconds)
    assert made is not None and made.bytes <= SNIPPET_BUDGET_BYTES
    assert made.audio_uri.startswith("data:audio/ogg;base64,") and SNIPPET_RATE >= 2 * 14_000
