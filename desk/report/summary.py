"""``logs summary``: a per-unit health table (like AudioMoth's SUMMARY.CSV) and the plots to look at."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from desk.collect.database import copy_table
from desk.report.effort_strip import BOOT_ENDS, boot_spans, minute_states
from desk.report.plots import plot_detections_by_hour, plot_effort
from desk.report.season import (
    HOURS_PER_DAY,
    Season,
    hour_of_day,
    load_season,
    per_analysed_hour,
    plausible_range,
)

if TYPE_CHECKING:
    import duckdb

SUMMARY_CSV = "SUMMARY.csv"
HEATMAP_PNG = "detections_by_hour.png"
EFFORT_PNG = "effort_over_time.png"
HOUR_OF_DAY_CSV = "detections_by_hour.csv"
HOUR_OF_DAY_COLUMNS = ("unit_id", "time_zone", "label", "local_hour", "analysed_h", "detections",
                       "detections_per_analysed_h")
"""``detections_per_analysed_h`` is empty (not 0) for hours of day the unit never listened to."""

EXACT_TIMES = """
    rates AS (SELECT unit_id, boot_id, nullif(any_value(sample_rate), 0) AS rate FROM boots GROUP BY ALL),
    opened AS (SELECT unit_id, boot_id, stream, arg_min(utc, seq) AS anchor_utc, arg_min(sample, seq) AS anchor_sample
               FROM events WHERE kind = 'stream_open' AND sample IS NOT NULL AND utc IS NOT NULL GROUP BY ALL),
    detected AS (SELECT unit_id, boot_id, stream, arg_min(utc, start_sample) AS anchor_utc,
                        min(start_sample) AS anchor_sample, min(utc) AS first_t, max(end_utc) AS last_t
                 FROM detections WHERE utc IS NOT NULL GROUP BY ALL),
    analysed AS (SELECT unit_id, boot_id, stream, min(first_sample) AS first_sample, max(last_sample) AS last_sample,
                        min(minute_utc) AS first_minute, max(minute_utc) AS last_minute FROM effort GROUP BY ALL),
    anchored AS (
        SELECT e.*, r.rate, coalesce(o.anchor_utc, d.anchor_utc) AS anchor_utc,
               CASE WHEN o.anchor_utc IS NOT NULL THEN o.anchor_sample ELSE d.anchor_sample END AS anchor_sample
        FROM analysed e LEFT JOIN opened o USING (unit_id, boot_id, stream)
             LEFT JOIN detected d USING (unit_id, boot_id, stream) LEFT JOIN rates r USING (unit_id, boot_id)),
    effort_spans AS (
        SELECT unit_id, boot_id,
               coalesce(anchor_utc + to_microseconds(CAST((first_sample - anchor_sample) * 1000000 // rate AS BIGINT)),
                        first_minute) AS t0,
               coalesce(anchor_utc + to_microseconds(CAST((last_sample - anchor_sample) * 1000000 // rate AS BIGINT)),
                        last_minute + INTERVAL 1 MINUTE) AS t1
        FROM anchored),
    times AS (
        SELECT unit_id, boot_id, min(utc) AS t0, max(utc) AS t1 FROM events GROUP BY ALL UNION ALL
        SELECT unit_id, boot_id, min(utc), max(utc) FROM health GROUP BY ALL UNION ALL
        SELECT unit_id, boot_id, t0, t1 FROM effort_spans UNION ALL
        SELECT unit_id, boot_id, first_t, last_t FROM detected)"""
"""Record times at sample precision: an effort row's span from its first/last sample and the stream's anchor
(its ``stream_open`` event, else a detection), falling back to the whole minute only when neither exists."""

SUMMARY_QUERY = f"""(
    WITH {EXACT_TIMES},
    boot_spans AS (SELECT unit_id, boot_id, min(t0) AS first_t, max(t1) AS last_t FROM times
                   WHERE t0 IS NOT NULL GROUP BY ALL),
    ordered AS (SELECT *, max(last_t) OVER (PARTITION BY unit_id ORDER BY first_t, boot_id
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS previous_end
                FROM boot_spans),
    islands AS (SELECT *, sum(CASE WHEN previous_end IS NULL OR first_t > previous_end THEN 1 ELSE 0 END)
                          OVER (PARTITION BY unit_id ORDER BY first_t, boot_id) AS island FROM ordered),
    merged AS (SELECT unit_id, min(first_t) AS first_t, max(last_t) AS last_t FROM islands GROUP BY unit_id, island),
    spans AS (SELECT unit_id, min(first_t) AS first_utc, max(last_t) AS last_utc,
                     sum(epoch(last_t - first_t)) / 3600 AS uptime_h FROM merged GROUP BY unit_id),
    boot_counts AS (SELECT unit_id, count(*) AS boots,
                           count(*) FILTER (WHERE NOT coalesce(ends.clean, false)) AS crashes
                    FROM boot_spans LEFT JOIN ({BOOT_ENDS}) ends USING (unit_id, boot_id) GROUP BY unit_id),
    minutes AS MATERIALIZED (SELECT unit_id, minute_utc, least(sum(analysed_s), 60) AS s FROM effort GROUP BY ALL),
    effort_gaps AS (
        SELECT unit_id, count(*) FILTER (WHERE next_minute - minute_utc > INTERVAL 1 MINUTE) AS effort_gaps
        FROM (SELECT unit_id, minute_utc,
                     lead(minute_utc) OVER (PARTITION BY unit_id ORDER BY minute_utc) AS next_minute FROM minutes)
        GROUP BY unit_id),
    effort_sum AS (SELECT unit_id, sum(s) / 3600 AS effort_h FROM minutes GROUP BY unit_id),
    det AS (SELECT unit_id, count(*) AS detections,
                   count(*) FILTER (WHERE clock_sync = 'unsynchronised') AS unsynchronised_detections
            FROM detections GROUP BY unit_id),
    ev AS (SELECT unit_id,
                  sum(coalesce(TRY_CAST(json_extract_string(fields, '$.count') AS BIGINT), 1))
                      FILTER (WHERE kind = 'xrun') AS xruns,
                  count(*) FILTER (WHERE kind = 'gap') AS gap_events,
                  count(*) FILTER (WHERE kind = 'disk_full') AS disk_full_events,
                  count(*) FILTER (WHERE kind = 'degraded') AS degradations
           FROM events GROUP BY unit_id),
    hl AS (SELECT unit_id, max(temperature_c) AS max_temperature_c,
                  min(disk_free_bytes) / 1048576 AS min_disk_free_mib,
                  arg_max(disk_free_bytes, utc) / 1048576 AS last_disk_free_mib
           FROM health GROUP BY unit_id),
    units AS (SELECT DISTINCT unit_id FROM card_boots),
    deployments AS (SELECT unit_id, string_agg(DISTINCT deployment_id, ';') AS deployment_id, count(DISTINCT card)
                    AS cards FROM (SELECT unit_id, deployment_id, card FROM boots UNION ALL
                                   SELECT unit_id, deployment_id, card FROM events) GROUP BY unit_id)
    SELECT u.unit_id, deployments.deployment_id, coalesce(deployments.cards, 0) AS cards,
           coalesce(boot_counts.boots, 0) AS boots, coalesce(boot_counts.crashes, 0) AS crashes,
           strftime(spans.first_utc, '%Y-%m-%dT%H:%M:%S.%gZ') AS first_utc,
           strftime(spans.last_utc, '%Y-%m-%dT%H:%M:%S.%gZ') AS last_utc,
           round(coalesce(spans.uptime_h, 0), 4) AS uptime_h, round(coalesce(effort_sum.effort_h, 0), 4) AS effort_h,
           round(effort_sum.effort_h / nullif(spans.uptime_h, 0), 4) AS effort_fraction,
           coalesce(det.detections, 0) AS detections,
           coalesce(det.unsynchronised_detections, 0) AS unsynchronised_detections,
           coalesce(ev.xruns, 0) AS xruns, coalesce(ev.gap_events, 0) AS gap_events,
           coalesce(effort_gaps.effort_gaps, 0) AS effort_gaps, coalesce(ev.disk_full_events, 0) AS disk_full_events,
           coalesce(ev.degradations, 0) AS degradations, hl.max_temperature_c,
           round(hl.min_disk_free_mib, 1) AS min_disk_free_mib, round(hl.last_disk_free_mib, 1) AS last_disk_free_mib
    FROM units u LEFT JOIN deployments USING (unit_id) LEFT JOIN spans USING (unit_id)
         LEFT JOIN boot_counts USING (unit_id) LEFT JOIN effort_sum USING (unit_id)
         LEFT JOIN effort_gaps USING (unit_id) LEFT JOIN det USING (unit_id)
         LEFT JOIN ev USING (unit_id) LEFT JOIN hl USING (unit_id)
    ORDER BY u.unit_id)"""
"""One row per unit. Uptime: the union of its boots' first-to-last record spans (sample-exact, overlapping
boots counted once); effort: audio actually analysed (a minute counts at most 60 s); crashes: boots that did
not end cleanly."""


def summarise(con: duckdb.DuckDBPyConnection, folder: Path) -> list[Path]:
    """Write ``SUMMARY.csv``, the per-unit hour-of-day table and the two PNGs into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / SUMMARY_CSV
    copy_table(con, SUMMARY_QUERY, table, "csv")
    now = datetime.now(timezone.utc)
    season = load_season(con, now)
    by_hour = write_hour_of_day_table(season, folder / HOUR_OF_DAY_CSV)
    heatmap = plot_detections_by_hour(season, folder / HEATMAP_PNG)
    states = minute_states(con, season, boot_spans(con, *plausible_range(now)))
    effort_png = plot_effort(season, states, folder / EFFORT_PNG)
    return [table, by_hour, heatmap, effort_png]


def write_hour_of_day_table(season: Season, path: Path) -> Path:
    """Per unit, label and local hour of day: analysed hours, detections, and their rate (empty = not listened)."""
    temp = path.with_name(f".tmp-{path.name}")
    with open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HOUR_OF_DAY_COLUMNS)
        for unit, unit_id in enumerate(season.units):
            detections, listened_h = hour_of_day(season, unit)
            rates = per_analysed_hour(detections, listened_h)
            for s, label in enumerate(season.species):
                for hour in range(HOURS_PER_DAY):
                    rate = rates[s, hour]
                    writer.writerow([unit_id, season.zones[unit], label, hour, f"{listened_h[hour]:.4f}",
                                     int(detections[s, hour]), "" if np.isnan(rate) else f"{rate:.4f}"])
    temp.replace(path)
    return path
