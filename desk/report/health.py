"""Unit health for the report: the summary table, time lost by cause, clock sync, daily temperature and disk,
settings that differ between units, and the findings of the last collection."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.collect.findings import CONFIG_COPIES
from desk.collect.live import UnitLiveness, unit_liveness
from desk.report.effort_strip import CRASHED, GAP, LISTENED, SCHEDULED_OFF
from desk.report.season import MINUTES_PER_HOUR, Season
from desk.report.summary import SUMMARY_QUERY

if TYPE_CHECKING:
    import duckdb

MIB = 1024 * 1024
SILENT_AFTER = 3
"""A unit heard over the air (``logs live``) is flagged silent after this many heartbeat periods without a word."""
DRIFT_VALUE_CHARS = 80
"""Long setting values (label lists, checksum maps) are shortened in the drift table."""


def unit_table(con: duckdb.DuckDBPyConnection, season: Season, minute_states: np.ndarray,
               now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per unit: the SUMMARY.csv columns plus hours listened / scheduled off / in gaps / down, and when
    it was last heard over the air (units on an uplink; silent ones flagged)."""
    cursor = con.execute(f"SELECT * FROM {SUMMARY_QUERY}")
    names = [d[0] for d in cursor.description]
    summary = {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}
    sync = _clock_sync(con)
    scoring = unit_scoring(con)
    heard = {u.unit_id: u for u in unit_liveness(con, now, SILENT_AFTER)} if now is not None else {}
    rows = []
    for i, unit in enumerate(season.units):
        row = summary.get(unit, {"unit_id": unit})
        states = minute_states[i]
        row.update({
            "time_zone": season.zones[i] + ("" if season.zone_from_config[i] else " (not recorded; UTC)"),
            "listened_h": round(float((states == LISTENED).sum()) / MINUTES_PER_HOUR, 2),
            "scheduled_off_h": round(float((states == SCHEDULED_OFF).sum()) / MINUTES_PER_HOUR, 2),
            "gap_h": round(float((states == GAP).sum()) / MINUTES_PER_HOUR, 2),
            "down_after_crash_h": round(float((states == CRASHED).sum()) / MINUTES_PER_HOUR, 2),
            "clock_sync": sync.get(unit, {}),
            "last_heard": _heard(heard.get(unit)),
            "scoring": scoring.get(unit, ""),
        })
        rows.append(row)
    return rows


def _heard(unit: UnitLiveness | None) -> str:
    """``2024-05-01 21:00:00 (online)``, with ``SILENT`` when quiet beyond the limit; empty without an uplink."""
    if unit is None:
        return ""
    when = "never" if unit.last_heard_utc is None else f"{unit.last_heard_utc:%Y-%m-%d %H:%M:%S}"
    flag = f" SILENT > {SILENT_AFTER} × {unit.heartbeat_s:g} s" if unit.silent else ""
    return f"{when} ({unit.status or 'no status'}){flag}"


def _clock_sync(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, float]]:
    """Per unit, the fraction of analysed audio timed by each clock-sync state."""
    shares: dict[str, dict[str, float]] = {}
    for unit, state, share in con.execute("""
            SELECT unit_id, clock_sync, s / nullif(sum(s) OVER (PARTITION BY unit_id), 0) FROM (
                SELECT unit_id, clock_sync, sum(analysed_s) AS s FROM effort GROUP BY ALL) ORDER BY ALL""").fetchall():
        shares.setdefault(unit, {})[state or "unknown"] = round(float(share or 0), 4)
    return shares


def daily_health(con: duckdb.DuckDBPyConnection, season: Season) -> dict[str, list[list[float | None]]]:
    """Per unit, per UTC day of the season: [max temperature C, min free disk MiB] (None without heartbeats)."""
    days = len(season.days)
    series: dict[str, list[list[float | None]]] = {unit: [[None, None] for _ in range(days)] for unit in season.units}
    column = {int(d): i for i, d in enumerate(season.days)}
    for unit, epoch_day, temperature, disk in con.execute("""
            SELECT unit_id, CAST(floor(epoch(utc) / 86400) AS BIGINT) AS day, max(temperature_c),
                   min(disk_free_bytes) FROM health WHERE utc IS NOT NULL GROUP BY ALL""").fetchall():
        day = column.get(epoch_day, -1)
        if unit in series and day >= 0:
            series[unit][day] = [None if temperature is None else round(float(temperature), 1),
                                 None if disk is None else round(disk / MIB, 1)]
    return series


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested settings as ``{"a.b.c": json value}``."""
    if not isinstance(value, dict) or not value:
        return {prefix: json.dumps(value, sort_keys=True)}
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}.{key}".lstrip(".")).items()}


def _settings(info: dict[str, Any]) -> dict[str, str]:
    """A boot's settings by dotted key; where the whole resolved config is recorded (``boot_info["config"]``),
    its keys stand for the top-level copies of the same settings."""
    config = info.get("config")
    if not isinstance(config, dict):
        return _flat(info)
    return {**_flat({k: v for k, v in info.items() if k != "config" and k not in CONFIG_COPIES}), **_flat(config)}


def scoring_text(info: dict[str, Any]) -> str:
    """What produced a boot's rows, from its manifest: ``heads frogs (sha256 1a2b3c4d5e6f); confidence 5d3e…;
    own thresholds for 3 label(s)`` (``zero-shot`` without heads or confidence)."""
    heads = [f"{h.get('name')} (sha256 {str(h.get('sha256', ''))[:12]})" for h in info.get("heads") or []]
    fit = info.get("confidence") or {}
    own = [k for k in info.get("thresholds_applied") or {} if k != "global"]
    parts = ([f"heads {', '.join(heads)}"] if heads else []) + ([f"confidence {fit.get('id')}"] if fit else [])
    parts += [f"own thresholds for {len(own)} label(s)"] if own else []
    return "; ".join(parts) or "zero-shot"


def unit_scoring(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Per unit, :func:`scoring_text` of its latest boot (heads and confidence by id, per-label thresholds)."""
    rows = con.execute("""
        SELECT unit_id, boot_info FROM boots
        QUALIFY row_number() OVER (PARTITION BY unit_id ORDER BY wall_utc_at_boot DESC, boot_id DESC) = 1""").fetchall()
    found = {}
    for unit, info in rows:
        try:
            found[unit] = scoring_text(json.loads(info or "{}"))
        except (ValueError, AttributeError):
            found[unit] = ""
    return found


def config_drift(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Settings (dotted keys of each unit's latest boot manifest) whose values differ between units."""
    rows = con.execute("""
        SELECT unit_id, boot_info FROM boots
        QUALIFY row_number() OVER (PARTITION BY unit_id ORDER BY wall_utc_at_boot DESC, boot_id DESC) = 1
        ORDER BY unit_id""").fetchall()
    settings = {}
    for unit, info in rows:
        try:
            settings[unit] = _settings(json.loads(info or "{}"))
        except ValueError:
            settings[unit] = {}
    keys = sorted({key for flat in settings.values() for key in flat})
    drift = []
    for key in keys:
        values = {unit: flat.get(key, "(absent)") for unit, flat in settings.items()}
        if len(set(values.values())) > 1:
            drift.append({"setting": key, "values": {u: _short(v) for u, v in values.items()}})
    return drift


def _short(text: str) -> str:
    return text if len(text) <= DRIFT_VALUE_CHARS else text[:DRIFT_VALUE_CHARS - 1] + "…"


def last_findings(con: duckdb.DuckDBPyConnection) -> list[dict[str, str]]:
    """The findings ``logs collect`` recorded (each once; errors first)."""
    rows = con.execute("""
        SELECT DISTINCT severity, "check", message FROM findings
        ORDER BY CASE severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, "check", message""").fetchall()
    return [{"severity": s, "check": c, "message": m} for s, c, m in rows]


def as_json(value: Any) -> Any:
    """Database values (datetimes, numpy numbers) as JSON-friendly ones."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value
