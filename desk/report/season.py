"""The season as arrays: analysed seconds per unit and UTC minute, detections per unit, species and UTC hour.

Everything the report and the summary plots show is derived from these, so a rate is always detections
divided by the audio actually analysed in the same unit and hour, and an hour nobody listened to stays
distinguishable from an hour with no detections.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np

from desk.collect.findings import EARLIEST_PLAUSIBLE, FUTURE_TOLERANCE
from desk.report.timezones import hourly_offsets_min, unit_zones
from edge.errors import EdgeError

if TYPE_CHECKING:
    import duckdb

SECONDS_PER_MINUTE = 60
MINUTES_PER_HOUR = 60
HOURS_PER_DAY = 24
SECONDS_PER_HOUR = SECONDS_PER_MINUTE * MINUTES_PER_HOUR
MAX_REPORT_DAYS = 4000
"""Days holding records (about ten years of seasons) beyond which the minute arrays are not allocated."""
SEASON_BREAK_DAYS = 60
"""This many days in a row without any record separate two seasons: the arrays skip them (the charts jump)."""
MAX_COUNT = np.iinfo(np.uint16).max
MIN_LISTENED_S = 60.0
"""An hour with less analysed audio than this is drawn as "not listened": a rate from seconds is noise."""


class ReportError(EdgeError):
    """The report cannot be built from this database or these inputs."""


@dataclass(frozen=True)
class Season:
    """Aggregates of one collection database; times are UTC, ``start_utc`` is a UTC midnight."""

    units: list[str]
    species: list[str]
    zones: list[str]
    """Per unit, the IANA time zone of its local time."""
    zone_from_config: list[bool]
    """Per unit, whether the zone came from its recorded config (else UTC as a fallback)."""
    start_utc: datetime
    hours: int
    """24 per reported day: the arrays hold only the days of :attr:`days`, not the whole span."""
    days: np.ndarray
    """(hours // 24,) int64 UTC days since 1970 that the arrays cover, ascending: every day from the first record
    to the last, except stretches of :data:`SEASON_BREAK_DAYS` or more without a record (between seasons)."""
    effort_min_s: np.ndarray
    """(units, hours * 60) float32: seconds analysed in each UTC minute (overlapping boots counted once)."""
    counts: np.ndarray
    """(units, species, hours) uint16: detections starting in each UTC hour."""
    offsets_min: np.ndarray
    """(units, hours) int16: each unit's UTC offset in minutes at the start of each UTC hour."""
    left_out: int
    """Records dated outside the plausible range (clock reset or ahead), not shown."""

    @property
    def effort_hour_s(self) -> np.ndarray:
        """(units, hours) float32 seconds analysed per UTC hour."""
        return self.effort_min_s.reshape(len(self.units), self.hours, MINUTES_PER_HOUR).sum(axis=2)

    def local_hour_of_day(self, unit: int) -> np.ndarray:
        """(hours,) int: the unit's local hour of day (0..23) at the start of each UTC hour."""
        minutes = np.arange(self.hours) * MINUTES_PER_HOUR + self.offsets_min[unit]
        return (minutes // MINUTES_PER_HOUR) % HOURS_PER_DAY

    @property
    def seasons(self) -> list[tuple[datetime, datetime]]:
        """The runs of consecutive reported days as (first, last) UTC midnights (one for a single season)."""
        breaks = np.flatnonzero(np.diff(self.days) > 1) + 1
        runs = zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(self.days)]]))
        return [(_midnight(int(self.days[a])), _midnight(int(self.days[b - 1]))) for a, b in runs]

    def minute_index(self, moment: datetime) -> int:
        """The column of naive-UTC ``moment`` in the minute arrays; a moment in a skipped stretch (or before the
        first day) maps to the start of the next reported day, one after the last day to the end."""
        day = (moment - EPOCH).days
        at = int(np.searchsorted(self.days, day))
        if at < len(self.days) and self.days[at] == day:
            return at * MINUTES_PER_DAY + (moment - _midnight(day).replace(tzinfo=None)).seconds // SECONDS_PER_MINUTE
        return at * MINUTES_PER_DAY

    def utc_at_minute(self, minute: int) -> datetime:
        """The naive-UTC start of column ``minute`` of the minute arrays (inverse of :meth:`minute_index`)."""
        at = min(minute // MINUTES_PER_DAY, len(self.days) - 1)  # the end of the last day counts from that day
        return _midnight(int(self.days[at])).replace(tzinfo=None) + timedelta(minutes=minute - at * MINUTES_PER_DAY)


EPOCH = datetime(1970, 1, 1)
MINUTES_PER_DAY = MINUTES_PER_HOUR * HOURS_PER_DAY


def _midnight(day: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)


def reported_days(present: np.ndarray) -> np.ndarray:
    """The days the arrays cover, from the (sorted, unique) days holding records: every day between them except
    stretches of :data:`SEASON_BREAK_DAYS` or more without a record."""
    days = [np.arange(a, b) for a, b in zip(present[:-1], present[1:]) if b - a < SEASON_BREAK_DAYS]
    return np.union1d(present, np.concatenate(days)) if days else present


def plausible_range(now: datetime) -> tuple[datetime, datetime]:
    """Naive-UTC bounds outside which a record's time comes from a wrong clock (as `collect` flags)."""
    return EARLIEST_PLAUSIBLE, now.astimezone(timezone.utc).replace(tzinfo=None) + FUTURE_TOLERANCE


def load_season(con: duckdb.DuckDBPyConnection, now: datetime | None = None) -> Season:
    """Read the aggregates; ``now`` (aware) bounds plausible times, default the current time."""
    low, high = plausible_range(now or datetime.now(timezone.utc))
    span = con.execute("""
        SELECT min(t), max(t), count(*) FILTER (WHERE t < ? OR t > ?) FROM (
            SELECT minute_utc AS t FROM effort UNION ALL SELECT utc FROM detections)""", [low, high]).fetchall()[0]
    bounds = con.execute("""
        SELECT min(t), max(t) FROM (SELECT minute_utc AS t FROM effort UNION ALL SELECT utc FROM detections)
        WHERE t BETWEEN ? AND ?""", [low, high]).fetchall()[0]
    units = [r[0] for r in con.execute("""
        SELECT DISTINCT unit_id FROM (SELECT unit_id FROM card_boots UNION SELECT unit_id FROM effort
                                      UNION SELECT unit_id FROM detections) WHERE unit_id IS NOT NULL
        ORDER BY unit_id""").fetchall()]
    species = [r[0] for r in con.execute(
        "SELECT DISTINCT label FROM detections WHERE label IS NOT NULL ORDER BY label").fetchall()]
    if bounds[0] is None or not units:
        raise ReportError("the collection database holds no effort or detections to report",
                          "run `biolingual-edge logs collect CARD... --into DB` first (or check the clock findings)")
    present = con.execute("""
        SELECT DISTINCT CAST(floor(epoch(t) / 86400) AS BIGINT) AS d FROM (
            SELECT minute_utc AS t FROM effort UNION ALL SELECT utc FROM detections)
        WHERE t BETWEEN ? AND ? ORDER BY d""", [low, high]).fetchnumpy()["d"].astype(np.int64)
    days = reported_days(present)
    if len(days) > MAX_REPORT_DAYS:
        first, last = bounds
        raise ReportError(f"{len(days)} days hold records ({first:%Y-%m-%d} to {last:%Y-%m-%d}), more than the "
                          f"{MAX_REPORT_DAYS} one report covers",
                          "report fewer databases at a time (or check the clock findings of `logs collect`)")
    start = _midnight(int(days[0])).replace(tzinfo=None)
    hours = len(days) * HOURS_PER_DAY
    effort = np.zeros((len(units), hours * MINUTES_PER_HOUR), dtype=np.float32)
    rows = con.execute("""
        SELECT list_position(?::VARCHAR[], unit_id) - 1 AS u, CAST(floor(epoch(minute_utc) / 60) AS BIGINT) AS m,
               least(sum(analysed_s), 60) AS s
        FROM effort WHERE minute_utc BETWEEN ? AND ? GROUP BY ALL""", [units, low, high]).fetchnumpy()
    effort[rows["u"], _columns(days, rows["m"], MINUTES_PER_DAY)] = rows["s"]
    counts = np.zeros((len(units), len(species), hours), dtype=np.uint16)
    rows = con.execute("""
        SELECT list_position(?::VARCHAR[], unit_id) - 1 AS u, list_position(?::VARCHAR[], label) - 1 AS s,
               CAST(floor(epoch(utc) / 3600) AS BIGINT) AS h, count(*) AS n
        FROM detections WHERE utc BETWEEN ? AND ? AND label IS NOT NULL GROUP BY ALL""",
                       [units, species, low, high]).fetchnumpy()
    counts[rows["u"], rows["s"], _columns(days, rows["h"], HOURS_PER_DAY)] = np.minimum(rows["n"], MAX_COUNT)
    aware_start = start.replace(tzinfo=timezone.utc)
    zones = unit_zones(con, units)
    offsets = np.stack([_offsets(zones[u][0], days) for u in units]) if units \
        else np.zeros((0, hours), dtype=np.int16)
    return Season(units, species, [zones[u][0] for u in units], [zones[u][1] for u in units], aware_start, hours,
                  days, effort, counts, offsets, int(span[2] or 0))


def _columns(days: np.ndarray, since_epoch: np.ndarray, per_day: int) -> np.ndarray:
    """Minutes (or hours) since 1970 -> columns of arrays that hold ``per_day`` columns for each of ``days``."""
    since_epoch = np.asarray(since_epoch, dtype=np.int64)
    return np.searchsorted(days, since_epoch // per_day) * per_day + since_epoch % per_day


def _offsets(zone: str, days: np.ndarray) -> np.ndarray:
    """(len(days) * 24,) a zone's UTC offsets per hour of the reported days, one run of consecutive days at once."""
    breaks = np.flatnonzero(np.diff(days) > 1) + 1
    return np.concatenate([hourly_offsets_min(zone, _midnight(int(run[0])), len(run) * HOURS_PER_DAY)
                           for run in np.split(days, breaks)])


def hour_of_day(season: Season, unit: int, use_local: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One unit's detections and listening by hour of day: ((species, 24) counts, (24,) analysed hours)."""
    hod = season.local_hour_of_day(unit) if use_local else np.arange(season.hours) % HOURS_PER_DAY
    listened_h = np.bincount(hod, weights=season.effort_hour_s[unit], minlength=HOURS_PER_DAY) / SECONDS_PER_HOUR
    detections = np.stack([np.bincount(hod, weights=season.counts[unit, s], minlength=HOURS_PER_DAY)
                           for s in range(len(season.species))]) if season.species \
        else np.zeros((0, HOURS_PER_DAY))
    return detections, listened_h


def per_analysed_hour(detections: np.ndarray, listened_h: np.ndarray) -> np.ndarray:
    """``detections`` (..., bins) / ``listened_h`` (bins,); NaN ("not listened", never 0) where too little
    was analysed (:data:`MIN_LISTENED_S`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = detections / listened_h
    rates[..., listened_h * SECONDS_PER_HOUR < MIN_LISTENED_S] = np.nan
    return rates
