"""Each unit's local time: the time zone from its boot manifest, and its UTC offset through the season."""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import duckdb

UTC_NAME = "UTC"
SECONDS_PER_MINUTE = 60


def zone_of(boot_info: dict[str, Any]) -> str | None:
    """The IANA zone a boot ran in: ``config.schedule.timezone`` of the resolved config, else ``None``."""
    config = boot_info.get("config")
    schedule = config.get("schedule") if isinstance(config, dict) else None
    zone = schedule.get("timezone") if isinstance(schedule, dict) else None
    return zone if isinstance(zone, str) and zone else None


def unit_zones(con: duckdb.DuckDBPyConnection, units: list[str]) -> dict[str, tuple[str, bool]]:
    """Per unit: (zone name, whether it came from the unit's config) from its latest boot that names one.

    A unit whose manifests record no zone (cards written before the whole config was recorded) falls back to
    UTC, flagged so the report can say so; an unknown zone name falls back the same way.
    """
    rows = con.execute("""
        SELECT unit_id, boot_info FROM boots ORDER BY unit_id, wall_utc_at_boot, boot_id""").fetchall()
    zones: dict[str, str] = {}
    for unit, info in rows:
        try:
            zone = zone_of(json.loads(info or "{}"))
        except ValueError:
            zone = None
        if zone is not None and _is_zone(zone):
            zones[unit] = zone
    return {unit: (zones[unit], True) if unit in zones else (UTC_NAME, False) for unit in units}


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def hourly_offsets_min(zone: str, start: datetime, hours: int) -> np.ndarray:
    """(hours,) int16: the zone's UTC offset in minutes at the start of each UTC hour from ``start`` (aware)."""
    tz = zoneinfo.ZoneInfo(zone)
    offsets = np.zeros(hours, dtype=np.int16)
    # Offsets change a few times a year: evaluate once per day and refine only the days that change.
    day_hours = 24
    for day_start in range(0, hours, day_hours):
        first = _offset_min(tz, start + timedelta(hours=day_start))
        last = _offset_min(tz, start + timedelta(hours=min(day_start + day_hours, hours) - 1))
        stop = min(day_start + day_hours, hours)
        if first == last:
            offsets[day_start:stop] = first
        else:
            offsets[day_start:stop] = [_offset_min(tz, start + timedelta(hours=h)) for h in range(day_start, stop)]
    return offsets


def _offset_min(tz: zoneinfo.ZoneInfo, moment: datetime) -> int:
    offset = moment.astimezone(timezone.utc).astimezone(tz).utcoffset() or timedelta(0)
    return int(offset.total_seconds()) // SECONDS_PER_MINUTE
