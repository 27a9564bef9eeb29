"""Assemble the report: season aggregates + health + optional confidence and clips -> one offline HTML file."""

from __future__ import annotations

import base64
import gzip
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.pages import content_security_policy, embedded_json
from desk.report.clips import select_clips
from desk.report.confidence import load_confidence
from desk.report.effort_strip import SLOT_MIN, STATE_NAMES, boot_spans, minute_states, slot_states
from desk.report.health import as_json, config_drift, daily_health, last_findings, unit_table
from desk.report.season import MIN_LISTENED_S, ReportError, Season, load_season, plausible_range

if TYPE_CHECKING:
    import duckdb

    from desk.archive.windows import WindowStore

SCORE_BINS = 40
GZIP_LEVEL = 6
DAY_MS = 86_400_000


@dataclass(frozen=True)
class ReportOptions:
    confidence: Path | None = None
    """``confidence.json`` whose curves and thresholds the species pages show."""
    clips: bool = False
    """Inline the top-scoring and some random clips per species (from the cards' ``clips/`` folders)."""
    title: str = "Season report"


@dataclass(frozen=True)
class ReportResult:
    path: Path
    bytes: int
    seconds: float
    units: int
    species: int
    detections: int
    clips: int


def write_report(con: duckdb.DuckDBPyConnection, out: Path, options: ReportOptions = ReportOptions(),
                 now: datetime | None = None, store: WindowStore | None = None) -> ReportResult:
    """Write the report to ``out`` (through a temp file and a rename); returns what it holds (``store``: the
    season archive, where ``--clips`` finds the recordings of detections without a card clip)."""
    started = time.perf_counter()
    confidence = load_confidence(options.confidence) if options.confidence is not None else None
    moment = now or datetime.now(timezone.utc)
    season = load_season(con, moment)
    low, high = plausible_range(moment)
    boots = boot_spans(con, low, high)
    states = minute_states(con, season, boots)
    clips = select_clips(con, store) if options.clips else {}
    payload = _payload(con, season, states, confidence, clips, options, moment)
    html = render_html(options.title, payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".tmp-{out.name}")
    try:
        temp.write_text(html, encoding="utf-8")
        temp.replace(out)
    except OSError as e:  # a full disk (or no permission) leaves no half-written page behind
        temp.unlink(missing_ok=True)
        raise ReportError(f"cannot write {out}: {e.strerror}",
                          "free space (or pick a writable place) for the report and run it again") from e
    return ReportResult(out, out.stat().st_size, time.perf_counter() - started, len(season.units),
                        len(season.species), payload["detections"], sum(len(c) for c in clips.values()))


def _packed(array: np.ndarray) -> str:
    """Little-endian bytes, gzip, base64: decoded in the page by ``DecompressionStream``."""
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return base64.b64encode(gzip.compress(raw, GZIP_LEVEL, mtime=0)).decode("ascii")


def _payload(con: duckdb.DuckDBPyConnection, season: Season, states: np.ndarray,
             confidence: dict[str, Any] | None, clips: dict[str, list[dict[str, Any]]], options: ReportOptions,
             now: datetime) -> dict[str, Any]:
    effort_h = np.minimum(np.rint(season.effort_hour_s), np.iinfo(np.uint16).max).astype(np.uint16)
    lo, hi, hist = _score_histograms(con)
    return {
        "generated_utc": now.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "units": [{"id": u, "zone": z, "zone_from_config": c}
                  for u, z, c in zip(season.units, season.zones, season.zone_from_config)],
        "species": season.species,
        "start_ms": int(season.start_utc.timestamp() * 1000),
        "hours": season.hours,
        "day_ms": [int(d) * DAY_MS for d in season.days],
        "seasons": [[f"{a:%Y-%m-%d}", f"{b:%Y-%m-%d}"] for a, b in season.seasons],
        "slot_min": SLOT_MIN,
        "min_listened_s": MIN_LISTENED_S,
        "state_names": list(STATE_NAMES),
        "detections": int(season.counts.sum(dtype=np.int64)),
        "left_out": season.left_out,
        "arrays": {"effort": _packed(effort_h), "counts": _packed(season.counts),
                   "offsets": _packed(season.offsets_min), "strip": _packed(slot_states(states))},
        "first_last": _first_last(con, season),
        "score_range": [lo, hi],
        "score_hist": hist,
        "health": {"units": [{k: as_json(v) for k, v in row.items()} for row in unit_table(con, season, states, now)],
                   "daily": daily_health(con, season), "drift": config_drift(con), "findings": last_findings(con)},
        "confidence": confidence,
        "clips": clips,
        "clips_requested": options.clips,
    }


def _first_last(con: duckdb.DuckDBPyConnection, season: Season) -> list[list[Any]]:
    """Per unit and species: [unit, species, first UTC, last UTC, detections, best score] (exact times)."""
    rows = con.execute("""
        SELECT list_position(?::VARCHAR[], unit_id) - 1, list_position(?::VARCHAR[], label) - 1,
               strftime(min(utc), '%Y-%m-%d %H:%M:%S'), strftime(max(utc), '%Y-%m-%d %H:%M:%S'), count(*),
               round(max(score), 4)
        FROM detections WHERE label IS NOT NULL AND utc IS NOT NULL GROUP BY unit_id, label ORDER BY ALL""",
                       [season.units, season.species]).fetchall()
    return [list(row) for row in rows]


def _score_histograms(con: duckdb.DuckDBPyConnection) -> tuple[float, float, dict[str, list[int]]]:
    lo, hi = con.execute("SELECT min(score), max(score) FROM detections").fetchall()[0]
    if lo is None:
        return 0.0, 1.0, {}
    hi = hi if hi > lo else lo + 1.0
    hist: dict[str, list[int]] = {}
    for label, index, n in con.execute(f"""
            SELECT label, least(CAST(floor((score - ?) / (? - ?) * {SCORE_BINS}) AS INTEGER), {SCORE_BINS - 1}),
                   count(*)
            FROM detections WHERE score IS NOT NULL AND label IS NOT NULL GROUP BY ALL""", [lo, hi, lo]).fetchall():
        hist.setdefault(label, [0] * SCORE_BINS)[index] = n
    return float(lo), float(hi), hist


def render_html(title: str, payload: dict[str, Any]) -> str:
    """The template with style, script and data inlined under a CSP that allows only that script (by hash);
    ``<`` in the data is escaped so it cannot end the tag."""
    static = resources.files("desk.report") / "static"
    script = (static / "report.js").read_text(encoding="utf-8")
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    page = (static / "report.html").read_text(encoding="utf-8")
    for key, value in (("__CSP__", content_security_policy(script)),
                       ("__STYLE__", (static / "report.css").read_text(encoding="utf-8")),
                       ("__SCRIPT__", script), ("__TITLE__", escaped)):
        page = page.replace(key, value)
    return page.replace("__DATA__", embedded_json(payload))
