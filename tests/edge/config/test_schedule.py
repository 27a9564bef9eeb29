"""Schedules: daily periods (time zones, DST, midnight), duty cycles, and sun-relative periods vs published times."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.config.schedule import Schedule, ScheduleConfig, build_schedule

UTC = dt.timezone.utc
TOLERANCE = dt.timedelta(minutes=3)


def schedule_of(**settings: Any) -> Schedule:
    return build_schedule(ScheduleConfig.model_validate(settings))


def at(text: str, zone: str = "UTC") -> dt.datetime:
    """A local wall-clock time in ``zone`` as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def test_always_on_never_changes() -> None:
    schedule = schedule_of(mode="always")
    assert schedule.is_on(at("2025-03-30 02:30"))
    assert schedule.next_change(at("2025-03-30 02:30")) is None


def test_daily_periods_follow_the_local_time_zone() -> None:
    zone = "Europe/Berlin"
    schedule = schedule_of(mode="daily", timezone=zone, periods=[{"start": "05:00", "end": "09:00"}])
    assert not schedule.is_on(at("2024-07-01 04:59", zone))
    assert schedule.is_on(at("2024-07-01 05:00", zone))
    assert not schedule.is_on(at("2024-07-01 09:00", zone))
    # Summer (UTC+2) and winter (UTC+1): same local time, different UTC instants.
    assert schedule.next_change(at("2024-07-01 00:00")) == dt.datetime(2024, 7, 1, 3, 0, tzinfo=UTC)
    assert schedule.next_change(at("2024-12-01 00:00")) == dt.datetime(2024, 12, 1, 4, 0, tzinfo=UTC)


def test_period_across_midnight_and_the_spring_dst_change() -> None:
    zone = "Europe/Berlin"
    schedule = schedule_of(mode="daily", timezone=zone, periods=[{"start": "22:00", "end": "04:00"}])
    assert schedule.is_on(at("2024-06-02 01:00", zone))
    assert schedule.next_change(at("2024-06-02 01:00", zone)) == at("2024-06-02 04:00", zone)
    # The night of 30 to 31 March 2024 loses an hour at 02:00: 22:00 CET -> 04:00 CEST is 5 h, not 6.
    night = schedule.on_seconds(at("2024-03-30 12:00", zone), at("2024-03-31 12:00", zone))
    assert night == 5 * 3600


def test_touching_periods_merge_into_one() -> None:
    schedule = schedule_of(mode="daily", periods=[{"start": "05:00", "end": "09:00"},
                                                  {"start": "09:00", "end": "10:00"}])
    assert schedule.next_change(at("2024-05-01 06:00")) == at("2024-05-01 10:00")


def test_duty_cycle_restarts_at_local_midnight() -> None:
    schedule = schedule_of(mode="duty", duty={"on_min": 10, "off_min": 20})
    assert schedule.is_on(at("2024-05-01 00:05"))
    assert not schedule.is_on(at("2024-05-01 00:15"))
    assert schedule.next_change(at("2024-05-01 00:05")) == at("2024-05-01 00:10")
    assert schedule.next_change(at("2024-05-01 00:15")) == at("2024-05-01 00:30")
    assert schedule.on_seconds(at("2024-05-01 00:00"), at("2024-05-02 00:00")) == 48 * 10 * 60


def test_duty_cycle_cut_by_midnight_runs_into_the_next_days_first_cycle() -> None:
    # 70-minute cycles: the 21st starts at 23:20 and is cut at midnight, where the next day starts "on".
    schedule = schedule_of(mode="duty", duty={"on_min": 50, "off_min": 20})
    assert schedule.is_on(at("2024-05-01 23:50"))
    assert schedule.next_change(at("2024-05-01 23:50")) == at("2024-05-02 00:50")


# Published sunrise/sunset (local clock, minute or second precision) for (latitude, longitude).
# London: Houses of Parliament 2025-06-21, 04:42:38 / 21:22:06 BST (table quoted on news.najib.digital,
# "Summer Solstice London"). The others are timeanddate.com values for the date.
PUBLISHED = [
    ("London summer", 51.5, -0.125, "Europe/London", "2025-06-21", "04:42:38", "21:22:06"),
    ("London winter", 51.5072, -0.1276, "Europe/London", "2024-12-21", "08:04", "15:53"),
    ("New York", 40.7128, -74.0060, "America/New_York", "2024-06-21", "05:25", "20:31"),
    ("Sydney", -33.8688, 151.2093, "Australia/Sydney", "2024-12-21", "05:41", "20:05"),
    ("Singapore", 1.3521, 103.8198, "Asia/Singapore", "2024-03-20", "07:09", "19:15"),
]


@pytest.mark.parametrize(("place", "lat", "lon", "zone", "day", "sunrise", "sunset"), PUBLISHED,
                         ids=[p[0] for p in PUBLISHED])
def test_sunrise_to_sunset_period_matches_published_times(place: str, lat: float, lon: float, zone: str, day: str,
                                                         sunrise: str, sunset: str) -> None:
    schedule = schedule_of(mode="solar", solar={"latitude": lat, "longitude": lon,
                                                "periods": [{"start": "sunrise", "end": "sunset"}]})
    rise, set_ = at(f"{day} {sunrise}", zone), at(f"{day} {sunset}", zone)
    found_rise = schedule.next_change(at(f"{day} 00:30", zone))
    assert found_rise is not None and abs(found_rise - rise) <= TOLERANCE
    found_set = schedule.next_change(found_rise)
    assert found_set is not None and abs(found_set - set_) <= TOLERANCE
    assert schedule.is_on(found_rise + (found_set - found_rise) / 2)
    assert not schedule.is_on(found_rise - dt.timedelta(seconds=1))


def test_solar_offsets_and_a_period_across_midnight() -> None:
    zone = "Europe/London"
    schedule = schedule_of(mode="solar", solar={"latitude": 51.5, "longitude": -0.125, "periods": [
        {"start": "sunrise-60", "end": "sunrise+120"}, {"start": "sunset-30", "end": "sunrise+30"}]})
    rise = at("2025-06-21 04:42:38", zone)
    set_ = at("2025-06-21 21:22:06", zone)
    start = schedule.next_change(rise + dt.timedelta(hours=3))  # off between the morning and the evening period
    assert start is not None and abs(start - (set_ - dt.timedelta(minutes=30))) <= TOLERANCE
    end = schedule.next_change(start)  # the night period runs into the next morning's period: one stretch
    next_rise = at("2025-06-22 04:42:53", zone)
    assert end is not None and abs(end - (next_rise + dt.timedelta(minutes=120))) <= TOLERANCE


TROMSO = {"latitude": 69.6492, "longitude": 18.9553}
"""Midnight sun about 20 May - 22 July; polar night about 27 November - 15 January."""


@pytest.mark.parametrize(("day", "fallback", "listening"), [
    ("2024-06-21", "record", True), ("2024-06-21", "skip", False),
    ("2024-12-21", "record", True), ("2024-12-21", "skip", False),
])
def test_polar_day_and_night_follow_the_fallback(day: str, fallback: str, listening: bool) -> None:
    schedule = schedule_of(mode="solar", solar={**TROMSO, "polar_fallback": fallback,
                                                "periods": [{"start": "sunrise-30", "end": "sunrise+90"}]})
    for hour in (0, 6, 12, 18, 23):
        assert schedule.is_on(at(f"{day} {hour:02d}:00", "Europe/Oslo")) is listening


@pytest.mark.parametrize(("day", "earliest", "latest"), [
    ("2024-06-21", "2024-07-18", "2024-07-28"),  # the sun sets again in late July
    ("2024-12-21", "2025-01-10", "2025-01-20"),  # and rises again in mid January
])
def test_next_change_finds_the_end_of_the_polar_season(day: str, earliest: str, latest: str) -> None:
    schedule = schedule_of(mode="solar", solar={**TROMSO, "periods": [{"start": "sunrise", "end": "sunrise+60"}]})
    change = schedule.next_change(at(f"{day} 12:00", "Europe/Oslo"))
    assert change is not None
    assert at(f"{earliest} 00:00") <= change <= at(f"{latest} 00:00")


def test_svalbard_all_year_without_any_event_never_crashes() -> None:
    # Longyearbyen in April: polar day for the sunrise/sunset, no civil dawn either.
    schedule = schedule_of(mode="solar", solar={"latitude": 78.22, "longitude": 15.65, "polar_fallback": "skip",
                                                "periods": [{"start": "dawn", "end": "dusk"}]})
    assert not schedule.is_on(at("2024-04-20 12:00"))
    change = schedule.next_change(at("2024-04-20 12:00"))
    assert change is not None and change > at("2024-04-20 12:00")
