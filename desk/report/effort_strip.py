"""What each unit was doing in every slot of the season: listening, scheduled off, in a gap, or down after a crash.

An absence of detections means something only where the strip says "listened"; this module is what lets the
report (and the reader) tell the other cases apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from desk.collect.findings import CLEAN_END_EVENTS, scheduled_off_spans
from desk.report.season import SECONDS_PER_MINUTE, Season

if TYPE_CHECKING:
    import duckdb

SLOT_MIN = 15
"""Strip resolution in minutes (every real UTC offset is a multiple of 15 minutes)."""
NO_RECORD, LISTENED, PARTLY, SCHEDULED_OFF, GAP, CRASHED = range(6)
STATE_NAMES = ("no record", "listened", "partly listened", "scheduled off", "gap", "down after crash")
STATE_COLOURS = ("#ffffff", "#1a9850", "#a6d96a", "#c6dbef", "#fdae61", "#d73027")
"""The same colours in the report page (report.css/report.js) and the summary PNG."""
LISTENED_MIN_S = SECONDS_PER_MINUTE / 2
"""A minute counts as listened when at least half of it was analysed."""

BOOT_ENDS = f"""
    SELECT unit_id, boot_id, bool_or(kind IN ({", ".join(f"'{k}'" for k in CLEAN_END_EVENTS)})) AS clean
    FROM events GROUP BY ALL"""
"""Per boot: whether its log ended (``stop`` or ``log_close``); one without ended by a crash, kill or power loss
(as `logs collect` reports such runs)."""

BOOT_SPANS = f"""
    WITH times AS (
        SELECT unit_id, boot_id, utc AS t FROM events UNION ALL SELECT unit_id, boot_id, utc FROM health UNION ALL
        SELECT unit_id, boot_id, minute_utc FROM effort UNION ALL SELECT unit_id, boot_id, end_utc FROM detections)
    SELECT unit_id, boot_id, min(t) AS first_t, max(t) AS last_t, coalesce(any_value(ends.clean), false) AS clean
    FROM times LEFT JOIN ({BOOT_ENDS}) ends USING (unit_id, boot_id) WHERE t BETWEEN ? AND ? GROUP BY ALL
    ORDER BY unit_id, first_t"""
"""Each boot's first and last record, and whether it ended cleanly (``log_close``, or ``stop`` with exit 0)."""


@dataclass(frozen=True)
class BootSpan:
    unit_id: str
    boot_id: str
    first: datetime
    last: datetime
    clean: bool


def boot_spans(con: duckdb.DuckDBPyConnection, low: datetime, high: datetime) -> list[BootSpan]:
    """Every boot's span (naive UTC) within ``[low, high]``, ordered by unit and start."""
    return [BootSpan(*row) for row in con.execute(BOOT_SPANS, [low, high]).fetchall()]


def gap_spans(con: duckdb.DuckDBPyConnection) -> list[tuple[str, datetime, float]]:
    """``gap`` events: (unit, start UTC, seconds)."""
    return con.execute("""
        SELECT unit_id, utc, TRY_CAST(json_extract_string(fields, '$.seconds') AS DOUBLE) FROM events
        WHERE kind = 'gap' AND utc IS NOT NULL""").fetchall()


def minute_states(con: duckdb.DuckDBPyConnection, season: Season, boots: list[BootSpan]) -> np.ndarray:
    """(units, minutes) uint8 state per UTC minute (``LISTENED`` .. ``CRASHED``, ``NO_RECORD`` outside boots)."""
    minutes = season.effort_min_s.shape[1]
    states = np.full((len(season.units), minutes), NO_RECORD, dtype=np.uint8)
    row = {unit: i for i, unit in enumerate(season.units)}
    index = season.minute_index

    by_unit: dict[str, list[BootSpan]] = {}
    for boot in boots:
        by_unit.setdefault(boot.unit_id, []).append(boot)
    for unit, spans in by_unit.items():
        if unit not in row:
            continue
        for boot in spans:
            states[row[unit], index(boot.first):index(boot.last) + 1] = GAP
        # down after a crash until the unit's next boot; after its last record the unit has no record (a card
        # retrieved mid-run ends without a stop, and nothing is known of the time after it)
        for boot, following in zip(spans, spans[1:]):
            if not boot.clean:
                crashed = slice(index(boot.last) + 1, index(following.first))
                states[row[unit], crashed] = np.where(states[row[unit], crashed] == NO_RECORD, CRASHED,
                                                      states[row[unit], crashed])
    for unit, moment, seconds in gap_spans(con):
        if unit in row and seconds:
            states[row[unit], index(moment):_end_column(season, moment + timedelta(seconds=seconds))] = GAP
    for unit, spans_off in scheduled_off_spans(con).items():
        for off, on in spans_off:
            if unit in row:
                states[row[unit], index(off):index(on)] = SCHEDULED_OFF
    states[season.effort_min_s >= LISTENED_MIN_S] = LISTENED
    return states


def _end_column(season: Season, end: datetime) -> int:
    """The column after the last minute a span ending at ``end`` touches: a span across a season break ends at
    its wall-clock end, not that many columns on (the skipped days have none)."""
    last = end - timedelta(microseconds=1)
    column = season.minute_index(last)
    return column + 1 if season.utc_at_minute(column) <= last else column


def slot_states(states: np.ndarray) -> np.ndarray:
    """(units, minutes) minute states -> (units, minutes // SLOT_MIN) slot states.

    A slot is ``LISTENED`` when every minute was, ``PARTLY`` when some were, else its most common other state.
    """
    units, minutes = states.shape
    slots = states[:, : minutes // SLOT_MIN * SLOT_MIN].reshape(units, -1, SLOT_MIN)
    counts = np.stack([(slots == code).sum(axis=2) for code in range(len(STATE_NAMES))], axis=2)
    listened = counts[:, :, LISTENED]
    other = counts.copy()
    other[:, :, LISTENED] = 0
    other[:, :, NO_RECORD] = np.where(other[:, :, 1:].sum(axis=2) > 0, 0, SLOT_MIN)
    result = other.argmax(axis=2).astype(np.uint8)
    result[listened > 0] = PARTLY
    result[listened == SLOT_MIN] = LISTENED
    return result
