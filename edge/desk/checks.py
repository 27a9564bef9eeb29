"""Checks on the collected data that a biologist needs before trusting it; each returns plain findings."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge.desk.cards import Finding

if TYPE_CHECKING:
    import duckdb

FUTURE_TOLERANCE = timedelta(minutes=10)
"""Records dated later than collection time plus this are flagged (the clock ran ahead)."""
EARLIEST_PLAUSIBLE = datetime(2015, 1, 1)
"""Records dated before this come from a reset clock (RTC battery, 1970 epoch)."""
LARGEST_GAPS_LISTED = 3
UNITS_LISTED = 6
SECONDS_PER_HOUR = 3600

ALL_TIMES = """
    SELECT unit_id, boot_id, utc AS t FROM detections UNION ALL
    SELECT unit_id, boot_id, minute_utc FROM effort UNION ALL
    SELECT unit_id, boot_id, utc FROM events UNION ALL
    SELECT unit_id, boot_id, utc FROM health"""


def run_checks(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Finding]:
    """All checks over the whole database; ``now`` is the collection time (naive UTC)."""
    return [*shared_unit_ids(con), *unsynchronised_clocks(con), *clock_out_of_range(con, now),
            *effort_gaps(con), *config_drift(con)]


def _spans(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    rows = con.execute(f"SELECT unit_id, boot_id, min(t), max(t) FROM ({ALL_TIMES}) GROUP BY ALL").fetchall()
    return {(unit, boot): (first, last) for unit, boot, first, last in rows if first is not None}


def shared_unit_ids(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """A unit id on several cards: a copy, a re-collection, a swapped card, or two recorders sharing an id."""
    boots_by_card: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for card, unit, boot in con.execute("SELECT card, unit_id, boot_id FROM card_boots").fetchall():
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
    overlap = [(max(a[0], b[0]), min(a[1], b[1])) for a in only_a for b in only_b if a[0] <= b[1] and b[0] <= a[1]]
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
        listed = ", ".join(f"{s:%Y-%m-%d %H:%M}-{e:%H:%M}" for s, e in largest)
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


def config_drift(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Settings (from each unit's latest boot manifest) that differ between units."""
    rows = con.execute("""
        SELECT unit_id, boot_info FROM boots
        QUALIFY row_number() OVER (PARTITION BY unit_id ORDER BY wall_utc_at_boot DESC, boot_id DESC) = 1
        ORDER BY unit_id""").fetchall()
    settings = {unit: _flatten(json.loads(info)) for unit, info in rows}
    keys = sorted({key for flat in settings.values() for key in flat})
    findings = []
    for key in keys:
        by_value: dict[str, list[str]] = defaultdict(list)
        for unit, flat in settings.items():
            by_value[flat.get(key, "<absent>")].append(unit)
        if len(by_value) > 1:
            parts = [f"{value} on {', '.join(units[:UNITS_LISTED])}"
                     + (f" and {len(units) - UNITS_LISTED} more" if len(units) > UNITS_LISTED else "")
                     for value, units in sorted(by_value.items(), key=lambda item: -len(item[1]))]
            findings.append(Finding("warning", "config drift", f"setting {key!r} differs between units: "
                                    + "; ".join(parts)))
    return findings
