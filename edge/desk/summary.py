"""``logs summary``: a per-unit health table (like AudioMoth's SUMMARY.CSV) and the plots to look at."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.desk.database import copy_table
from edge.desk.plots import plot_detections_by_hour, plot_effort

if TYPE_CHECKING:
    import duckdb

SUMMARY_CSV = "SUMMARY.csv"
HEATMAP_PNG = "detections_by_hour.png"
EFFORT_PNG = "effort_over_time.png"

SUMMARY_QUERY = """(
    WITH times AS (
        SELECT unit_id, boot_id, utc AS t FROM events UNION ALL
        SELECT unit_id, boot_id, minute_utc FROM effort UNION ALL
        SELECT unit_id, boot_id, minute_utc + INTERVAL 1 MINUTE FROM effort UNION ALL
        SELECT unit_id, boot_id, utc FROM health),
    boot_spans AS (SELECT unit_id, boot_id, min(t) AS first_t, max(t) AS last_t FROM times GROUP BY ALL),
    spans AS (SELECT unit_id, count(*) AS boots, min(first_t) AS first_utc, max(last_t) AS last_utc,
                     sum(epoch(last_t - first_t)) / 3600 AS uptime_h FROM boot_spans GROUP BY unit_id),
    minutes AS (SELECT DISTINCT unit_id, minute_utc FROM effort),
    effort_gaps AS (
        SELECT unit_id, count(*) FILTER (WHERE next_minute - minute_utc > INTERVAL 1 MINUTE) AS effort_gaps
        FROM (SELECT unit_id, minute_utc,
                     lead(minute_utc) OVER (PARTITION BY unit_id ORDER BY minute_utc) AS next_minute FROM minutes)
        GROUP BY unit_id),
    effort_sum AS (SELECT unit_id, sum(analysed_s) / 3600 AS effort_h FROM effort GROUP BY unit_id),
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
           coalesce(spans.boots, 0) AS boots,
           strftime(spans.first_utc, '%Y-%m-%dT%H:%M:%SZ') AS first_utc,
           strftime(spans.last_utc, '%Y-%m-%dT%H:%M:%SZ') AS last_utc,
           round(coalesce(spans.uptime_h, 0), 3) AS uptime_h, round(coalesce(effort_sum.effort_h, 0), 3) AS effort_h,
           round(effort_sum.effort_h / nullif(spans.uptime_h, 0), 4) AS effort_fraction,
           coalesce(det.detections, 0) AS detections,
           coalesce(det.unsynchronised_detections, 0) AS unsynchronised_detections,
           coalesce(ev.xruns, 0) AS xruns, coalesce(ev.gap_events, 0) AS gap_events,
           coalesce(effort_gaps.effort_gaps, 0) AS effort_gaps, coalesce(ev.disk_full_events, 0) AS disk_full_events,
           coalesce(ev.degradations, 0) AS degradations, hl.max_temperature_c,
           round(hl.min_disk_free_mib, 1) AS min_disk_free_mib, round(hl.last_disk_free_mib, 1) AS last_disk_free_mib
    FROM units u LEFT JOIN deployments USING (unit_id) LEFT JOIN spans USING (unit_id)
         LEFT JOIN effort_sum USING (unit_id) LEFT JOIN effort_gaps USING (unit_id) LEFT JOIN det USING (unit_id)
         LEFT JOIN ev USING (unit_id) LEFT JOIN hl USING (unit_id)
    ORDER BY u.unit_id)"""
"""One row per unit. Uptime: sum over boots of first-to-last record; effort: audio actually analysed."""


def summarise(con: duckdb.DuckDBPyConnection, folder: Path) -> list[Path]:
    """Write ``SUMMARY.csv`` and the two PNGs into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / SUMMARY_CSV
    copy_table(con, SUMMARY_QUERY, table, "csv")
    counts = con.execute("""
        SELECT label, hour(utc) AS h, count(*) FROM detections GROUP BY ALL ORDER BY label, h""").fetchall()
    effort = con.execute("""
        SELECT unit_id, date_trunc('hour', minute_utc) AS hour_utc, sum(analysed_s) / 3600 AS fraction
        FROM effort GROUP BY ALL ORDER BY unit_id, hour_utc""").fetchall()
    heatmap = plot_detections_by_hour(counts, folder / HEATMAP_PNG)
    effort_png = plot_effort(effort, folder / EFFORT_PNG)
    return [table, heatmap, effort_png]
