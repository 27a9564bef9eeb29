"""Checks on the collected data that a biologist needs before trusting it; each returns plain findings."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from desk.collect.cards import Finding

if TYPE_CHECKING:
    import duckdb

FUTURE_TOLERANCE = timedelta(minutes=10)
"""Records dated later than collection time plus this are flagged (the clock ran ahead)."""
EARLIEST_PLAUSIBLE = datetime(2015, 1, 1)
"""Records dated before this come from a reset clock (RTC battery, 1970 epoch)."""
LARGEST_GAPS_LISTED = 3
UNITS_LISTED = 6
SECONDS_PER_HOUR = 3600

CONCURRENT_TOLERANCE = timedelta(minutes=1)
"""Two boots of one unit must overlap by more than this to count as two recorders (a clock step at boot, from
the RTC to NTP, can put a new boot's first record a little before the previous boot's last)."""
CLEAN_END_EVENTS = ("stop", "log_close")
"""A boot whose log has neither ended by a crash, ``kill -9`` or power loss (or was still running)."""
FAILURE_EVENTS = ("stream_open_failed", "pipeline_failed", "giving_up", "inference_stalled")
BOOTS_LISTED = 5
CONFIG_COPIES = ("config_hash", "thresholds", "hysteresis", "confirm", "window_s", "hop_s", "backend")
"""Boot-record keys derived from the resolved config: compared through ``boot_info["config"]`` when it is there."""
ABSENT = "<absent>"
IDENTITY_SECTION = "unit"
"""The config section naming the recorder (unit_id, deployment_id): different on every unit, not a setting."""

EXACT_TIMES = """
    SELECT unit_id, boot_id, utc AS t FROM detections UNION ALL
    SELECT unit_id, boot_id, end_utc FROM detections UNION ALL
    SELECT unit_id, boot_id, utc FROM events UNION ALL
    SELECT unit_id, boot_id, utc FROM health"""
"""Times of records that happened at that moment (effort minutes are floored to the minute, so not here)."""
ALL_TIMES = """
    SELECT unit_id, boot_id, utc AS t FROM detections UNION ALL
    SELECT unit_id, boot_id, minute_utc FROM effort UNION ALL
    SELECT unit_id, boot_id, utc FROM events UNION ALL
    SELECT unit_id, boot_id, utc FROM health"""


def run_checks(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """All checks over the whole database; ``now`` is the collection time (naive UTC)."""
    return [*shared_unit_ids(con), *unsynchronised_clocks(con), *clock_out_of_range(con, now),
            *unfinished_runs(con), *effort_gaps(con), *gap_events(con), *config_drift(con)]


def _spans(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """Per (unit, boot): first and last moment it logged anything (exact times; effort minutes only as a fallback)."""
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for times in (ALL_TIMES, EXACT_TIMES):
        rows = con.execute(f"SELECT unit_id, boot_id, min(t), max(t) FROM ({times}) GROUP BY ALL").fetchall()
        spans.update({(unit, boot): (first, last) for unit, boot, first, last in rows if first is not None})
    return spans


def shared_unit_ids(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """A unit id on several cards: a copy, a re-collection, a swapped card, or two recorders sharing an id."""
    boots_by_card: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    # rows that came over the air (`logs live`, card 'uplink:<unit>') or from a unit's fallback file ('unwritten:
    # <file>') are a copy of some card's, not a card
    for card, unit, boot in con.execute("SELECT card, unit_id, boot_id FROM card_boots WHERE card NOT LIKE "
                                        "'uplink:%' AND card NOT LIKE 'unwritten:%'").fetchall():
        boots_by_card[unit][card].add(boot)
    spans = _spans(con)
    findings = []
    for unit, cards in sorted(boots_by_card.items()):
        names = sorted(cards)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                findings.append(_compare_cards(unit, first, cards[first], second, cards[second], spans))
    return findings


def _compare_cards(unit: str, card_a: str, boots_a: set[str], card_b: str, boots_b: set[str],
                   spans: dict[tuple[str, str], tuple[datetime, datetime]]) -> Finding:
    if boots_a <= boots_b or boots_b <= boots_a:
        return Finding("info", "unit ids", f"unit {unit}: cards {card_a} and {card_b} hold the same boots "
                       "(a copy or a re-collection of one card); duplicates were ignored")
    only_a = [spans[(unit, b)] for b in boots_a - boots_b if (unit, b) in spans]
    only_b = [spans[(unit, b)] for b in boots_b - boots_a if (unit, b) in spans]
    overlap = [(max(a[0], b[0]), min(a[1], b[1])) for a in only_a for b in only_b
               if min(a[1], b[1]) - max(a[0], b[0]) > CONCURRENT_TOLERANCE]
    if overlap:
        start, end = min(o[0] for o in overlap), max(o[1] for o in overlap)
        return Finding("error", "unit ids", f"unit id {unit} is used by two recorders: cards {card_a} and {card_b} "
                       f"both log {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC from different boots; give "
                       "each recorder its own unit_id (rows are kept apart by boot_id meanwhile)")
    return Finding("info", "unit ids", f"unit {unit} appears on cards {card_a} and {card_b} at different times "
                   "(card swapped during the deployment?)")


def unsynchronised_clocks(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Spans logged while the unit's clock was not set from NTP, GPS or an RTC."""
    rows = con.execute("""
        SELECT unit_id, count(DISTINCT boot_id || '/' || stream), min(t), max(t), sum(detection)
        FROM (SELECT unit_id, boot_id, stream, utc AS t, 1 AS detection FROM detections
              WHERE clock_sync = 'unsynchronised' UNION ALL
              SELECT unit_id, boot_id, stream, minute_utc, 0 FROM effort WHERE clock_sync = 'unsynchronised')
        GROUP BY unit_id ORDER BY unit_id""").fetchall()
    return [Finding("warning", "clock", f"unit {unit}: clock unsynchronised in {streams} stream(s) "
                    f"({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} as the unit believed, {detections} "
                    "detection(s)); these times are only as good as the unit's free-running clock")
            for unit, streams, first, last, detections in rows]


def clock_out_of_range(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """Records dated after the collection time, or before the clock could plausibly have been set."""
    late = now + FUTURE_TOLERANCE
    rows = con.execute(f"""
        SELECT unit_id, count(*) FILTER (WHERE t > ?), max(t), count(*) FILTER (WHERE t < ?), min(t)
        FROM ({ALL_TIMES}) GROUP BY unit_id ORDER BY unit_id""", [late, EARLIEST_PLAUSIBLE]).fetchall()
    findings = []
    for unit, future, latest, past, earliest in rows:
        if future:
            findings.append(Finding("error", "clock", f"unit {unit}: {future} record(s) dated after collection time "
                                    f"(latest {latest:%Y-%m-%d %H:%M} UTC): the unit's clock ran ahead; "
                                    "correct its times before analysis"))
        if past:
            findings.append(Finding("error", "clock", f"unit {unit}: {past} record(s) dated before "
                                    f"{EARLIEST_PLAUSIBLE:%Y} (earliest {earliest:%Y-%m-%d}): the clock was reset"))
    return findings


def _listed(items: list[str]) -> str:
    more = len(items) - BOOTS_LISTED
    return ", ".join(items[:BOOTS_LISTED]) + (f" and {more} more" if more > 0 else "")


def unfinished_runs(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Runs that ended without a ``stop`` (crash, kill, power loss) and runs that stopped on a failure."""
    clean, failures = ", ".join(f"'{k}'" for k in CLEAN_END_EVENTS), ", ".join(f"'{k}'" for k in FAILURE_EVENTS)
    rows = con.execute(f"""
        SELECT b.unit_id, b.boot_id, count(e.kind) FILTER (WHERE e.kind IN ({clean})),
               max(TRY_CAST(json_extract_string(e.fields, '$.exit_code') AS INTEGER)) FILTER (WHERE e.kind = 'stop'),
               string_agg(DISTINCT e.kind, ', ' ORDER BY e.kind) FILTER (WHERE e.kind IN ({failures}))
        FROM (SELECT DISTINCT unit_id, boot_id FROM card_boots) b LEFT JOIN events e USING (unit_id, boot_id)
        GROUP BY ALL ORDER BY b.unit_id, b.boot_id""").fetchall()
    spans = _spans(con)
    crashed: dict[str, list[str]] = defaultdict(list)
    failed: dict[str, list[str]] = defaultdict(list)
    for unit, boot, ends, exit_code, failure in rows:
        if not ends:
            last = spans.get((unit, boot))
            crashed[unit].append(f"{boot} (last record {last[1]:%Y-%m-%d %H:%M:%S} UTC)" if last else
                                 f"{boot} (nothing logged)")
        elif exit_code or failure:
            failed[unit].append(f"{boot} (" + "; ".join(
                part for part in (f"exit code {exit_code}" if exit_code else "", failure or "") if part) + ")")
    findings = [Finding("warning", "runs", f"unit {unit}: {len(boots)} run(s) ended without a stop (crash, kill or "
                        f"power loss, or still running when the card was copied): {_listed(boots)}; whatever "
                        "was not yet written then is missing")
                for unit, boots in sorted(crashed.items())]
    findings += [Finding("warning", "runs", f"unit {unit}: {len(boots)} run(s) stopped on a failure: "
                         f"{_listed(boots)}; see their events") for unit, boots in sorted(failed.items())]
    return findings


def gap_events(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Audio the unit lost while recording (``gap`` events: stream lost, ring overwritten): never analysed."""
    rows = con.execute("""
        SELECT unit_id, count(*), count(s), sum(s), max(s), arg_max(utc, s) FROM (
            SELECT unit_id, utc, coalesce(TRY_CAST(json_extract_string(fields, '$.seconds') AS DOUBLE),
                                          (TRY_CAST(json_extract_string(fields, '$.end_sample') AS BIGINT) - sample)
                                          / b.sample_rate) AS s
            FROM events LEFT JOIN (SELECT DISTINCT unit_id, boot_id, sample_rate FROM boots) b
                 USING (unit_id, boot_id)
            WHERE kind = 'gap')
        GROUP BY unit_id ORDER BY unit_id""").fetchall()
    findings = []
    for unit, gaps, measured, total, largest, at in rows:
        length = (f"{total:.1f} s in all (largest {largest:.1f} s at {at:%Y-%m-%d %H:%M:%S} UTC)" if measured else
                  "length not recorded")
        unknown = f", {gaps - measured} of unknown length" if measured and measured < gaps else ""
        findings.append(Finding("warning", "effort", f"unit {unit}: {gaps} gap(s) in the audio while recording, "
                                f"{length}{unknown}; nothing was analysed there, so absences in those spans are "
                                "unknown"))
    return findings


def scheduled_off_spans(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per unit, the spans the schedule switched the unit off (``scheduled_off`` .. ``scheduled_on``)."""
    rows = con.execute("""
        SELECT unit_id, kind, utc FROM events WHERE kind IN ('scheduled_off', 'scheduled_on')
        ORDER BY unit_id, utc""").fetchall()
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    off_since: dict[str, datetime] = {}
    for unit, kind, utc in rows:
        if kind == "scheduled_off":
            off_since.setdefault(unit, utc)
        elif unit in off_since:
            spans[unit].append((off_since.pop(unit), utc))
    return spans


def _minus(span: tuple[datetime, datetime], holes: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """``span`` with every hole cut out (holes sorted by start)."""
    pieces, start, end = [], span[0], span[1]
    for hole_start, hole_end in holes:
        if hole_end <= start or hole_start >= end:
            continue
        if hole_start > start:
            pieces.append((start, hole_start))
        start = max(start, hole_end)
    if start < end:
        pieces.append((start, end))
    return [p for p in pieces if p[1] - p[0] >= timedelta(minutes=1)]


def gap_text(start: datetime, end: datetime) -> str:
    """``2024-05-01 03:04-03:15``, or with the end's date when the gap crosses midnight (``…-2024-05-03 03:15``)."""
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
    return f"{start:%Y-%m-%d %H:%M}-{until}"


def effort_gaps(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Minutes with no analysed audio between a unit's first and last analysed minute.

    Time the schedule switched the unit off is not a gap: it is reported once as scheduled-off (info).
    """
    rows = con.execute("""
        SELECT unit_id, minute_utc, next_minute FROM (
            SELECT unit_id, minute_utc,
                   lead(minute_utc) OVER (PARTITION BY unit_id ORDER BY minute_utc) AS next_minute
            FROM (SELECT DISTINCT unit_id, minute_utc FROM effort))
        WHERE next_minute - minute_utc > INTERVAL 1 MINUTE ORDER BY unit_id, minute_utc""").fetchall()
    scheduled = scheduled_off_spans(con)
    gaps: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for unit, minute, next_minute in rows:
        gaps[unit].extend(_minus((minute + timedelta(minutes=1), next_minute), scheduled.get(unit, [])))
    findings = []
    for unit, spans in scheduled.items():
        off_h = sum((end - start).total_seconds() for start, end in spans) / SECONDS_PER_HOUR
        findings.append(Finding("info", "effort", f"unit {unit}: scheduled off for {off_h:.2f} h in "
                                f"{len(spans)} span(s) (by its schedule, not missing data)"))
    for unit, spans in gaps.items():
        if not spans:
            continue
        total_h = sum((end - start).total_seconds() for start, end in spans) / SECONDS_PER_HOUR
        largest = sorted(spans, key=lambda s: s[0] - s[1])[:LARGEST_GAPS_LISTED]
        listed = ", ".join(gap_text(s, e) for s, e in largest)
        findings.append(Finding("warning", "effort", f"unit {unit}: {len(spans)} gap(s) in effort totalling "
                                f"{total_h:.2f} h (largest: {listed} UTC); no audio was analysed there, so "
                                "absences in those spans are unknown"))
    return findings


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True)}


def _settings(info: dict[str, Any]) -> dict[str, str]:
    """A boot's settings by dotted key; with the whole resolved config recorded, its keys replace the copies."""
    config = info.get("config")
    if not isinstance(config, dict):
        return _flatten(info)
    flat = _flatten({k: v for k, v in info.items() if k != "config" and k not in CONFIG_COPIES})
    flat.update(_flatten({k: v for k, v in config.items() if k != IDENTITY_SECTION}))
    return flat


def _values(by_value: dict[str, list[str]]) -> str:
    return "; ".join(f"{value} on {', '.join(units[:UNITS_LISTED])}"
                     + (f" and {len(units) - UNITS_LISTED} more" if len(units) > UNITS_LISTED else "")
                     for value, units in sorted(by_value.items(), key=lambda item: -len(item[1])))


def config_drift(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Settings that differ between units (latest boot of each), and settings a unit changed between boots."""
    rows = con.execute("""
        SELECT DISTINCT ON (unit_id, boot_id) unit_id, boot_id, wall_utc_at_boot, boot_info FROM boots
        ORDER BY unit_id, wall_utc_at_boot, boot_id""").fetchall()
    history: dict[str, list[tuple[str, datetime | None, dict[str, str]]]] = defaultdict(list)
    for unit, boot, at, info in rows:
        history[unit].append((boot, at, _settings(json.loads(info))))
    latest = {unit: boots[-1][2] for unit, boots in history.items()}
    findings = []
    for key in sorted({key for flat in latest.values() for key in flat}):
        by_value: dict[str, list[str]] = defaultdict(list)
        for unit, flat in latest.items():
            by_value[flat.get(key, ABSENT)].append(unit)
        if len(by_value) > 1:
            findings.append(Finding("warning", "config drift",
                                    f"setting {key!r} differs between units: {_values(by_value)}"))
    for unit, boots in sorted(history.items()):
        for (_, _, before), (boot, at, after) in zip(boots, boots[1:]):
            changed = [f"{key} {before.get(key, ABSENT)} -> {after.get(key, ABSENT)}"
                       for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
            if changed:
                when = f" ({at:%Y-%m-%d %H:%M} UTC)" if at else ""
                findings.append(Finding("warning", "config drift", f"unit {unit}: settings changed at boot {boot}"
                                        f"{when}: {'; '.join(changed[:UNITS_LISTED * 2])}"
                                        + (f" and {len(changed) - UNITS_LISTED * 2} more" if
                                           len(changed) > UNITS_LISTED * 2 else "")))
    return findings
