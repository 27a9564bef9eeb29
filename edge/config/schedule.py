"""When a unit listens: always, fixed daily periods, a duty cycle, or periods relative to sunrise/sunset.

The daemon asks :meth:`Schedule.is_on` and :meth:`Schedule.next_change` with UTC datetimes; off-schedule
time closes the audio stream and is logged as scheduled-off, not as missing.

Every schedule is built from per-day on-intervals (UTC) that are merged, so periods that cross midnight or
touch each other behave as one. Daily periods and the duty cycle follow the configured ``timezone``
(zoneinfo, daylight saving included: a period starting in the hour skipped in spring starts at the same
wall-clock offset as before the change). Solar periods are computed per date in local mean solar time
(UTC + longitude/15 h), so "the day" is always the one around local noon whatever the time zone.

Polar day and polar night: on a date where an anchor event (dawn, sunrise, sunset, dusk) does not happen,
a solar period using it records that whole solar day (``polar_fallback: record``, the default: nothing is
missed in an Arctic summer) or is skipped for that day (``polar_fallback: skip``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import zoneinfo
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Annotated, Any, Literal

from astral import Observer
from astral import sun as astral_sun
from pydantic import Field, field_validator, model_validator

from edge.config.base import StrictModel, raise_problems

UTC = dt.timezone.utc
MINUTES_PER_DAY = 24 * 60
DAY = dt.timedelta(days=1)
MAX_SOLAR_OFFSET_MIN = 12 * 60
"""Offsets beyond half a day from a sun event are almost certainly typos."""
SPAN_DAYS = 3
"""The on-intervals of one date lie within [date - 1 day, date + SPAN_DAYS days)."""
LOOKAHEAD_DAYS = (2, 8, 40, 400)
"""Horizons tried in turn by :meth:`Schedule.next_change`; beyond the last one there is no change."""
SOLAR_EVENTS = ("dawn", "sunrise", "sunset", "dusk")
"""dawn/dusk are civil twilight (sun 6° below the horizon)."""
SCHEDULE_MODES = ("always", "daily", "duty", "solar")

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_SOLAR = re.compile(r"^\s*(dawn|sunrise|sunset|dusk)\s*(?:([+-])\s*(\d+))?\s*$")
_YAML_SEXAGESIMAL_HINT = "write times in quotes, e.g. '05:30' (YAML reads an unquoted 5:30 as the number 330)"


def _clock_minutes(value: str, allow_midnight_end: bool) -> int:
    match = _CLOCK.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a time of day; use 'HH:MM' (24 h)")
    hours, minutes = int(match.group(1)), int(match.group(2))
    total = hours * 60 + minutes
    limit = MINUTES_PER_DAY if allow_midnight_end else MINUTES_PER_DAY - 1
    if minutes > 59 or total > limit:
        raise ValueError(f"'{value}' is not a time of day (00:00 to {'24:00' if allow_midnight_end else '23:59'})")
    return total


def _quoted_time(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(_YAML_SEXAGESIMAL_HINT)
    return value


def parse_solar_time(value: str) -> tuple[str, int]:
    """``"sunrise-60"`` -> ``("sunrise", -60)``: a sun event and an offset in minutes."""
    match = _SOLAR.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a sun time; use EVENT or EVENT+MIN / EVENT-MIN with EVENT one of "
                         f"{', '.join(SOLAR_EVENTS)} (e.g. 'sunrise-30')")
    event, sign, minutes = match.groups()
    offset = int(minutes or 0) * (-1 if sign == "-" else 1)
    if abs(offset) > MAX_SOLAR_OFFSET_MIN:
        raise ValueError(f"offset {offset} min in '{value}' is more than {MAX_SOLAR_OFFSET_MIN} min from {event}")
    return event, offset


class DailyPeriod(StrictModel):
    """A period repeated every day in the schedule's time zone; ``end`` before ``start`` crosses midnight."""

    start: Annotated[str, Field(description="local start time 'HH:MM'")]
    end: Annotated[str, Field(description="local end time 'HH:MM' ('24:00' allowed)")]

    @field_validator("start", "end", mode="before")
    @classmethod
    def _check_quoted(cls, value: Any) -> Any:
        return _quoted_time(value)

    @field_validator("start")
    @classmethod
    def _start_clock(cls, value: str) -> str:
        _clock_minutes(value, allow_midnight_end=False)
        return value

    @field_validator("end")
    @classmethod
    def _end_clock(cls, value: str) -> str:
        _clock_minutes(value, allow_midnight_end=True)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> DailyPeriod:
        if _clock_minutes(self.start, False) == _clock_minutes(self.end, True) % MINUTES_PER_DAY:
            raise_problems([("end", f"equals start ({self.start}): the period would be empty "
                                    "(use mode: always to record all day)")])
        return self

    def minutes(self) -> tuple[int, int]:
        """(start, end) in minutes after local midnight; ``end`` > ``start`` (``+1440`` when crossing midnight)."""
        start = _clock_minutes(self.start, False)
        end = _clock_minutes(self.end, True)
        return start, end if end > start else end + MINUTES_PER_DAY


class DutyCycle(StrictModel):
    """On/off cycle restarting at every local midnight (a cycle cut by midnight is shortened)."""

    on_min: Annotated[float, Field(gt=0, description="minutes listening per cycle")]
    off_min: Annotated[float, Field(gt=0, description="minutes off per cycle")]

    @model_validator(mode="after")
    def _fits_a_day(self) -> DutyCycle:
        if self.on_min + self.off_min > MINUTES_PER_DAY:
            raise_problems([("off_min", f"on_min + off_min = {self.on_min + self.off_min:g} min is longer than "
                                        f"a day ({MINUTES_PER_DAY} min)")])
        return self


class SolarPeriod(StrictModel):
    """A period between two sun times such as ``sunrise-60`` and ``sunrise+180``."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _sun_time(cls, value: str) -> str:
        parse_solar_time(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SolarPeriod:
        start_event, start_offset = parse_solar_time(self.start)
        end_event, end_offset = parse_solar_time(self.end)
        if start_event == end_event and end_offset <= start_offset:
            raise_problems([("end", f"'{self.end}' is not after '{self.start}' (same event; a period around "
                                    "it would last almost a day — swap start and end?)")])
        return self


class SolarSettings(StrictModel):
    """Where the unit is (for sun times) and which periods relative to the sun it listens."""

    latitude: Annotated[float, Field(ge=-90, le=90, description="degrees, north positive")]
    longitude: Annotated[float, Field(ge=-180, le=180, description="degrees, east positive")]
    periods: Annotated[list[SolarPeriod], Field(min_length=1)]
    polar_fallback: Literal["record", "skip"] = "record"


class ScheduleConfig(StrictModel):
    """The ``schedule`` section: ``mode`` picks which of the other keys apply."""

    mode: Literal["always", "daily", "duty", "solar"] = "always"
    timezone: str = "UTC"
    periods: list[DailyPeriod] = []
    duty: DutyCycle | None = None
    solar: SolarSettings | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
            suggestion = f" (did you mean '{close[0]}'?)" if close else " (use an IANA name like 'Europe/Berlin')"
            raise ValueError(f"unknown time zone '{value}'{suggestion}") from None
        return value

    @model_validator(mode="after")
    def _mode_settings(self) -> ScheduleConfig:
        problems: list[tuple[str, str]] = []
        needed = {"daily": "periods", "duty": "duty", "solar": "solar"}
        present = {"periods": bool(self.periods), "duty": self.duty is not None, "solar": self.solar is not None}
        for key, is_set in present.items():
            if needed.get(self.mode) == key and not is_set:
                problems.append((key, f"required for mode: {self.mode}"))
            elif needed.get(self.mode) != key and is_set:
                owner = next(m for m, k in needed.items() if k == key)
                problems.append((key, f"only used with mode: {owner}, but mode is {self.mode} (remove it or "
                                      f"change mode)"))
        spans = [p.minutes() for p in self.periods]
        for i, (start_a, end_a) in enumerate(spans):
            for j in range(i + 1, len(spans)):
                start_b, end_b = spans[j]
                if any(start_a < end_b + shift and start_b + shift < end_a for shift in (-MINUTES_PER_DAY, 0,
                                                                                         MINUTES_PER_DAY)):
                    problems.append((f"periods.{j}", f"overlaps period {i} ({self.periods[i].start}-"
                                                     f"{self.periods[i].end}); merge them into one"))
        raise_problems(problems)
        return self


Interval = tuple[dt.datetime, dt.datetime]


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Schedule(ABC):
    """On/off over time; all arguments and results are timezone-aware UTC datetimes."""

    def __init__(self, tz: dt.tzinfo) -> None:
        self.tz = tz
        """The zone whose dates define "a day" for this schedule."""

    @abstractmethod
    def day_intervals(self, day: dt.date) -> list[Interval]:
        """On-intervals (UTC) of the periods that belong to local date ``day``."""

    def midnight(self, day: dt.date) -> dt.datetime:
        """Start of local date ``day``, in UTC."""
        return dt.datetime.combine(day, dt.time(0), tzinfo=self.tz).astimezone(UTC)

    def local_date(self, utc: dt.datetime) -> dt.date:
        return _aware(utc).astimezone(self.tz).date()

    def merged(self, first: dt.date, last: dt.date) -> list[Interval]:
        """Merged on-intervals of the dates ``first..last`` (inclusive)."""
        days = (last - first).days + 1
        return _merge([iv for n in range(days) for iv in self.day_intervals(first + n * DAY)])

    def is_on(self, utc: dt.datetime) -> bool:
        """Whether the unit should be listening at ``utc``."""
        utc = _aware(utc)
        day = self.local_date(utc)
        return any(start <= utc < end for start, end in self.merged(day - SPAN_DAYS * DAY, day))

    def next_change(self, utc: dt.datetime) -> dt.datetime | None:
        """The first instant after ``utc`` where :meth:`is_on` flips; None if none within about a year."""
        utc = _aware(utc)
        day = self.local_date(utc)
        for horizon in LOOKAHEAD_DAYS:
            # Intervals of later dates start at or after this instant, so edges before it are final.
            trusted_until = self.midnight(day + horizon * DAY)
            edges = [edge for interval in self.merged(day - SPAN_DAYS * DAY, day + horizon * DAY)
                     for edge in interval if utc < edge < trusted_until]
            if edges:
                return min(edges)
        return None

    def on_seconds(self, start: dt.datetime, end: dt.datetime) -> float:
        """Seconds of on-time within ``[start, end)``."""
        start, end = _aware(start), _aware(end)
        intervals = self.merged(self.local_date(start) - SPAN_DAYS * DAY, self.local_date(end))
        return sum(max(0.0, (min(b, end) - max(a, start)).total_seconds()) for a, b in intervals)


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware (UTC)")
    return value.astimezone(UTC)


class AlwaysOn(Schedule):
    def day_intervals(self, day: dt.date) -> list[Interval]:
        return [(self.midnight(day), self.midnight(day + DAY))]

    def is_on(self, utc: dt.datetime) -> bool:
        return True

    def next_change(self, utc: dt.datetime) -> dt.datetime | None:
        return None


class DailyPeriods(Schedule):
    def __init__(self, tz: dt.tzinfo, periods: list[DailyPeriod]) -> None:
        super().__init__(tz)
        self.spans = [p.minutes() for p in periods]

    def day_intervals(self, day: dt.date) -> list[Interval]:
        base = dt.datetime.combine(day, dt.time(0))
        return [(self._utc(base + dt.timedelta(minutes=start)), self._utc(base + dt.timedelta(minutes=end)))
                for start, end in self.spans]

    def _utc(self, naive_local: dt.datetime) -> dt.datetime:
        return naive_local.replace(tzinfo=self.tz).astimezone(UTC)


class DutySchedule(Schedule):
    def __init__(self, tz: dt.tzinfo, duty: DutyCycle) -> None:
        super().__init__(tz)
        self.on = dt.timedelta(minutes=duty.on_min)
        self.cycle = dt.timedelta(minutes=duty.on_min + duty.off_min)

    def day_intervals(self, day: dt.date) -> list[Interval]:
        start, day_end = self.midnight(day), self.midnight(day + DAY)
        intervals = []
        while start < day_end:
            intervals.append((start, min(start + self.on, day_end)))
            start += self.cycle
        return intervals


class SolarSchedule(Schedule):
    def __init__(self, solar: SolarSettings) -> None:
        super().__init__(dt.timezone(dt.timedelta(minutes=round(solar.longitude * 4))))
        self.observer = Observer(solar.latitude, solar.longitude)
        self.periods = [(parse_solar_time(p.start), parse_solar_time(p.end)) for p in solar.periods]
        self.record_when_missing = solar.polar_fallback == "record"
        self._event = lru_cache(maxsize=4096)(self._event_uncached)

    def _event_uncached(self, event: str, day: dt.date) -> dt.datetime | None:
        try:
            return getattr(astral_sun, event)(self.observer, day, tzinfo=self.tz).astimezone(UTC)
        except ValueError:  # astral: the sun never rises/sets/reaches twilight depression on this date
            return None

    def day_intervals(self, day: dt.date) -> list[Interval]:
        intervals = []
        for (start_event, start_offset), (end_event, end_offset) in self.periods:
            start = self._at(start_event, start_offset, day)
            end = self._at(end_event, end_offset, day)
            if start is not None and end is not None and end <= start:
                end = self._at(end_event, end_offset, day + DAY)
            if start is None or end is None:
                if self.record_when_missing:
                    intervals.append((self.midnight(day), self.midnight(day + DAY)))
                continue
            intervals.append((start, end))
        return intervals

    def _at(self, event: str, offset_min: int, day: dt.date) -> dt.datetime | None:
        when = self._event(event, day)
        return None if when is None else when + dt.timedelta(minutes=offset_min)


def build_schedule(config: ScheduleConfig) -> Schedule:
    """The runtime schedule for a validated ``schedule`` section."""
    tz = zoneinfo.ZoneInfo(config.timezone)
    if config.mode == "daily":
        return DailyPeriods(tz, config.periods)
    if config.mode == "duty" and config.duty is not None:
        return DutySchedule(tz, config.duty)
    if config.mode == "solar" and config.solar is not None:
        return SolarSchedule(config.solar)
    return AlwaysOn(tz)
