"""``logs report`` on a 20-unit x 120-day season with 1 M detections: generation time, file size, browser load.

The season is written straight into the collection database with DuckDB (the same schema `logs collect`
fills), not through the card writer: writing 1 M detections and 1.7 M effort minutes through ``CardLog``
and collecting them would take far longer than the report itself (that route is what
``tests/desk/report/test_report.py`` exercises, on a smaller season). Clips: one real recording hard-linked under 6
clip names per species on one card folder, so the clip budget is exercised without 100 MB of copies.

Baseline, measured in the same run on the same database: ``logs summary`` (SUMMARY.csv + PNGs); the ratio
says what the richer report costs over it. Then the page is opened in headless Chromium and the time to
first full render and to re-render after a unit filter change is measured.

    python benchmarks/report_season.py [--units 20] [--days 120] [--detections 1000000] [--species 50]
                                       [--workdir DIR] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import zoneinfo
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from benchmarks.shared_audio import shared_audio
from desk.collect.database import connect
from desk.report.page import ReportOptions, write_report
from desk.report.summary import summarise
from edge.card.cardformat import CLIPS_DIR, compact_utc, safe_name
from edge.daemon.health import peak_rss_mb

RATE = 48_000
START = datetime(2024, 4, 1, tzinfo=timezone.utc)
NIGHT_MIN = 12 * 60
"""Every unit listens 18:00-06:00 local time; by day it is scheduled off."""
ZONES = ("America/Chicago", "America/Denver", "Europe/Berlin", "Asia/Kolkata", "Australia/Sydney")
SIZE_BUDGET_BYTES = 10 * 1024 * 1024
CLIP_AUDIO = Path("kahst__BirdNET-Analyzer") / "soundscape.wav"
"""The real recording every clip links to, relative to the shared recordings (benchmarks/shared_audio.py)."""
CLIPS_PER_SPECIES = 6


def nights(units: int, days: int) -> dict[str, np.ndarray]:
    """One row per unit and night: the UTC start of 18:00 local, its boot and stream."""
    unit, day, on = [], [], []
    for u in range(units):
        tz = zoneinfo.ZoneInfo(ZONES[u % len(ZONES)])
        for d in range(days):
            local = datetime.combine((START + timedelta(days=d)).date(), datetime.min.time(), tz) + timedelta(hours=18)
            unit.append(u)
            day.append(d)
            on.append(local.astimezone(timezone.utc).replace(tzinfo=None))
    return {"u": np.array(unit), "d": np.array(day), "on_utc": np.array(on, dtype="datetime64[us]")}


def build(db: Path, units: int, days: int, detections: int, species: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    con = connect(db)
    con.register("nights", nights(units, days))
    labels = [f"species {s:02d}" for s in range(species)]
    # Each species calls in its own part of the night, more on some units than on others.
    night = rng.integers(0, units * days, detections)
    sp = rng.choice(species, detections, p=np.arange(species, 0, -1) / np.arange(species, 0, -1).sum())
    minute = np.clip(rng.normal(sp / species * NIGHT_MIN, 60), 0, NIGHT_MIN - 1).astype(np.int64)
    second = rng.integers(0, 60, detections)
    con.register("fake", {"night": night, "sp": sp, "minute": minute, "second": second,
                          "score": rng.uniform(0.2, 0.95, detections)})
    con.execute("""
        CREATE TEMP TABLE n AS SELECT row_number() OVER (ORDER BY u, d) - 1 AS night, u, d, on_utc,
               'AM-' || lpad(CAST(u AS VARCHAR), 2, '0') AS unit_id,
               'AM-' || lpad(CAST(u AS VARCHAR), 2, '0') || '-b' || CAST(d // 30 AS VARCHAR) AS boot_id,
               d % 30 + 1 AS stream FROM nights""")
    con.execute("""
        INSERT INTO effort SELECT unit_id, 'season', boot_id, stream, 'ntp', on_utc + to_minutes(m),
            m * 60 * 48000, (m + 1) * 60 * 48000, 60.0, '/cards/' || unit_id, 'synthetic'
        FROM n, range(720) r(m)
        WHERE NOT (d % 17 = 5 AND u % 4 = 1 AND m BETWEEN 120 AND 240)""")  # some 2-hour gaps
    con.execute("""
        INSERT INTO detections SELECT n.unit_id, 'season', boot_id, stream, 'ntp',
            on_utc + to_minutes(f.minute) + to_seconds(f.second),
            on_utc + to_minutes(f.minute) + to_seconds(f.second + 10),
            ? [f.sp + 1], f.score, f.score / 10, (f.minute * 60 + f.second) * 48000,
            (f.minute * 60 + f.second + 10) * 48000, (f.minute * 60 + f.second) * 48000, 1,
            '/cards/' || n.unit_id, 'synthetic'
        FROM fake f JOIN n USING (night)
        WHERE NOT (d % 17 = 5 AND u % 4 = 1 AND f.minute BETWEEN 120 AND 240)""", [labels])
    con.execute("""
        INSERT INTO events SELECT unit_id, 'season', boot_id, row_number() OVER (PARTITION BY boot_id ORDER BY t),
            stream, 'ntp', sample, t, kind, fields, '/cards/' || unit_id, 'synthetic' FROM (
            SELECT unit_id, boot_id, stream, 0 AS sample, on_utc AS t, 'stream_open' AS kind, '{}' AS fields FROM n
            UNION ALL SELECT unit_id, boot_id, stream, 720 * 2880000, on_utc + INTERVAL 12 HOUR, 'scheduled_off', '{}'
            FROM n UNION ALL SELECT unit_id, boot_id, stream, 0, on_utc, 'scheduled_on', '{}' FROM n WHERE d % 30 > 0
            UNION ALL SELECT unit_id, boot_id, stream, 720 * 2880000, on_utc + INTERVAL 12 HOUR, 'log_close', '{}'
            FROM n WHERE (d % 30 = 29 OR d = (SELECT max(d) FROM n)) AND NOT (u % 7 = 3 AND d // 30 = 1)
            UNION ALL SELECT unit_id, boot_id, stream, 120 * 2880000, on_utc + INTERVAL 2 HOUR, 'gap',
                '{"seconds": 7200}' FROM n WHERE d % 17 = 5 AND u % 4 = 1)""")
    con.execute("""
        INSERT INTO health SELECT unit_id, 'season', boot_id, h, stream, 'ntp', h * 172800000,
            on_utc + to_hours(h), 'health', '{}', '/cards/' || unit_id, 'synthetic',
            20 + 8 * sin(h / 2) + u % 5, 60000000000 - d * 400000000 FROM n, range(12) r(h)""")
    boots = con.execute("SELECT DISTINCT unit_id, boot_id, u, min(on_utc) FROM n GROUP BY ALL").fetchall()
    con.executemany("INSERT INTO boots VALUES (?, 'season', ?, 1, 48000, ?, ?, ?, ?)", [
        [unit, boot, f"h{u % 3}", first, json.dumps({"config": {"schedule": {"mode": "daily",
                                                                            "timezone": ZONES[u % len(ZONES)]},
                                                               "analysis": {"threshold": 0.3 + 0.1 * (u % 3)}}}),
         f"/cards/{unit}"] for unit, boot, u, first in boots])
    con.execute("INSERT INTO card_boots SELECT DISTINCT '/cards/' || unit_id, unit_id, boot_id FROM n")
    con.close()


def add_clips(db: Path, cards: Path, clip: Path) -> None:
    """Hard-link ``clip`` (a real recording) under the names of each species' best detections (one card folder)."""
    con = connect(db)
    rows = con.execute(f"""
        SELECT unit_id, boot_id, label, start_sample, utc FROM detections
        QUALIFY row_number() OVER (PARTITION BY label ORDER BY score DESC) <= {CLIPS_PER_SPECIES}""").fetchall()
    for unit, boot, label, sample, utc in rows:
        folder = cards / unit / CLIPS_DIR / safe_name(label)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = compact_utc(utc.replace(tzinfo=timezone.utc))
        name = f"{stamp}_{safe_name(unit)}_{safe_name(label)}_{boot}_{sample}.wav"
        os.link(clip, folder / name)
    con.execute("UPDATE card_boots SET card = ? || substr(card, 8)", [str(cards) + "/"])
    con.close()


def browser_times(report: Path) -> tuple[float, float]:
    """Seconds to first full render and to re-render after choosing one unit, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        started = time.perf_counter()
        page.goto(report.as_uri())
        page.wait_for_selector("body[data-rendered='1']", timeout=120_000)
        load = time.perf_counter() - started
        started = time.perf_counter()
        page.select_option("#f-unit", "1")
        page.wait_for_selector("body[data-rendered='2']")
        refilter = time.perf_counter() - started
        browser.close()
    return load, refilter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--species", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    clip = shared_audio() / CLIP_AUDIO
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "season.duckdb"
    db.unlink(missing_ok=True)
    shutil.rmtree(work / "cards", ignore_errors=True)
    started = time.perf_counter()
    build(db, args.units, args.days, args.detections, args.species)
    add_clips(db, work / "cards", clip)
    print(f"season built (DuckDB route) in {time.perf_counter() - started:.1f} s -> {db}")
    con = connect(db, read_only=True)
    try:
        n, effort = con.execute("SELECT (SELECT count(*) FROM detections), (SELECT count(*) FROM effort)").fetchall()[0]
        started = time.perf_counter()
        summarise(con, work / "summary")
        baseline = time.perf_counter() - started
        result = write_report(con, work / "report.html", ReportOptions(clips=True))
        plain = write_report(con, work / "report-noclips.html")
    finally:
        con.close()
    print(f"{args.units} units x {args.days} days: {n} detections, {effort} effort minutes, {args.species} species")
    print(f"baseline `logs summary`: {baseline:.2f} s")
    print(f"`logs report --clips`: {result.seconds:.2f} s ({result.seconds / baseline:.2f} x summary), "
          f"{result.bytes / 1e6:.2f} MB ({result.bytes / SIZE_BUDGET_BYTES:.0%} of the 10 MiB budget), "
          f"{result.clips} clips")
    print(f"`logs report` (no clips): {plain.seconds:.2f} s, {plain.bytes / 1e6:.2f} MB")
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    if result.bytes > SIZE_BUDGET_BYTES:
        raise SystemExit(f"report is {result.bytes / 1e6:.1f} MB, over the 10 MiB budget")
    if not args.no_browser:
        load, refilter = browser_times(result.path)
        print(f"headless Chromium: first render {load:.2f} s, unit filter re-render {refilter:.2f} s")


if __name__ == "__main__":
    main()
