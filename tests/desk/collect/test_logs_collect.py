"""``logs collect``: damaged, odd and conflicting cards each give a clear finding; nothing crashes or duplicates."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from desk.collect.cards import Finding
from desk.collect.database import connect
from desk.collect.ingest import collect
from edge.card.cardlog import CardLog, UnitIdentity
from edge.cli import app
from tests.cardlog_support import HOP, RATE, T0, WINDOW, event_at, write_card

COLLECTED = datetime(2024, 6, 1, tzinfo=timezone.utc)


def count(db: Path, sql: str) -> int:
    con = connect(db, read_only=True)
    try:
        return int(con.execute(sql).fetchall()[0][0])
    finally:
        con.close()


def messages(findings: list[Finding], check: str, severity: str | None = None) -> list[str]:
    return [f.message for f in findings if f.check == check and (severity is None or f.severity == severity)]


def complete_rows(path: Path) -> int:
    """Rows after the header on complete lines: what a careful reader can trust in a truncated file."""
    data = path.read_bytes()
    return max(data.count(b"\n") - 1, 0)


def test_collect_is_idempotent_and_a_copied_card_adds_nothing(tmp_path: Path) -> None:
    write_card(tmp_path / "card", minutes=5)
    db = tmp_path / "db.duckdb"
    first = collect([tmp_path / "card"], db, now=COLLECTED)
    assert first.added["detections"] == first.read["detections"] == 59
    shutil.copytree(tmp_path / "card", tmp_path / "copy")
    again = collect([tmp_path / "card", tmp_path / "copy"], db, now=COLLECTED)
    assert again.read["detections"] == 2 * 59 and again.added["detections"] == 0
    assert count(db, "SELECT count(*) FROM detections") == 59
    assert count(db, "SELECT count(*) FROM effort") == first.added["effort"] and again.added["effort"] == 0
    assert count(db, "SELECT round(sum(analysed_s)) FROM effort") == 5 * 60
    assert messages(again.findings, "unit ids", "info"), "the copy is named as such"
    assert not [f for f in again.findings if f.severity != "info"]


@pytest.mark.parametrize("seed", range(6))
def test_files_truncated_at_random_offsets_are_read_up_to_the_last_whole_line(tmp_path: Path, seed: int) -> None:
    card = tmp_path / "card"
    write_card(card, minutes=4, streams=2)
    rng = random.Random(seed)
    segments = sorted(p for p in card.rglob("*") if p.suffix in (".csv", ".jsonl"))
    for path in rng.sample(segments, 3):
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(rng.randrange(0, size))
    expected = sum(complete_rows(p) for p in (card / "detections").iterdir())
    result = collect([card], tmp_path / "db.duckdb", now=COLLECTED)
    assert result.added["detections"] == expected
    assert all(f.severity == "info" for f in result.findings if f.check == "lines")


def test_empty_files_and_an_empty_manifest_are_reported_not_fatal(tmp_path: Path) -> None:
    card = tmp_path / "card"
    log = write_card(card, minutes=2)
    (card / "detections" / f"2024-05-02_{log.boot_id}_000.csv").touch()
    (card / "events" / f"2024-05-02_{log.boot_id}_000.jsonl.part").touch()
    (card / "boots" / "20240501T000000Z-000000.json").touch()
    result = collect([card], tmp_path / "db.duckdb", now=COLLECTED)
    assert result.added["detections"] == 23
    assert len([m for m in messages(result.findings, "lines", "info") if "empty file" in m]) == 2
    assert any("unreadable boot manifest" in m for m in messages(result.findings, "manifest"))


def test_a_card_with_a_future_clock_is_an_error_finding(tmp_path: Path) -> None:
    write_card(tmp_path / "card", start=datetime(2031, 3, 1, tzinfo=timezone.utc), minutes=2)
    result = collect([tmp_path / "card"], tmp_path / "db.duckdb", now=COLLECTED)
    (message,) = messages(result.findings, "clock", "error")
    assert "after collection time" in message and "2031-03-01" in message
    assert result.added["detections"] == 23, "rows are kept, flagged, not dropped"


def test_two_recorders_sharing_a_unit_id_are_an_error_finding(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-07", minutes=3)
    write_card(tmp_path / "b", "AM-07", minutes=3, start=T0 + timedelta(minutes=1))
    db = tmp_path / "db.duckdb"
    result = collect([tmp_path / "a", tmp_path / "b"], db, now=COLLECTED)
    (message,) = messages(result.findings, "unit ids", "error")
    assert "AM-07" in message and "two recorders" in message
    assert count(db, "SELECT count(*) FROM detections") == 2 * 35, "rows of both stay apart by boot id"


def test_a_card_swapped_mid_season_is_only_information(tmp_path: Path) -> None:
    write_card(tmp_path / "may", "AM-07", minutes=2)
    write_card(tmp_path / "june", "AM-07", minutes=2, start=T0 + timedelta(days=20))
    result = collect([tmp_path / "may", tmp_path / "june"], tmp_path / "db.duckdb", now=COLLECTED)
    assert not messages(result.findings, "unit ids", "error")
    assert any("different times" in m for m in messages(result.findings, "unit ids", "info"))


def downgrade(card: Path, version: int, drop: tuple[str, ...]) -> None:
    """Make a card look like one written by another schema version lacking ``drop`` columns."""
    for manifest in (card / "boots").glob("*.json"):
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**data, "schema_version": version}))
    for path in (card / "detections").glob("*.csv"):
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        columns = [c for c in rows[0] if c not in drop]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(out.getvalue())


def test_an_older_schema_is_read_by_column_name_with_missing_columns_empty(tmp_path: Path) -> None:
    write_card(tmp_path / "card", minutes=2)
    downgrade(tmp_path / "card", 0, ("cosine", "clock_sync"))
    db = tmp_path / "db.duckdb"
    result = collect([tmp_path / "card"], db, now=COLLECTED)
    schema = messages(result.findings, "schema", "warning")
    assert any("older schema version 0" in m for m in schema)
    assert any("cosine" in m and "clock_sync" in m for m in schema)
    assert result.added["detections"] == 23
    assert count(db, "SELECT count(*) FROM detections WHERE cosine IS NULL AND score > 0") == 23


def test_a_newer_schema_is_skipped_with_an_upgrade_hint(tmp_path: Path) -> None:
    write_card(tmp_path / "card", minutes=2)
    downgrade(tmp_path / "card", 99, ())
    result = collect([tmp_path / "card"], tmp_path / "db.duckdb", now=COLLECTED)
    assert any("newer" in m and "upgrade" in m for m in messages(result.findings, "schema", "error"))
    assert result.added["detections"] == 0


def test_effort_gaps_unsynchronised_clocks_and_config_drift_are_reported(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-01", minutes=3, streams=2, pause_minutes=30)
    write_card(tmp_path / "b", "AM-02", minutes=3, clock_sync="unsynchronised",
               boot_info={"config_hash": "cfg-2", "thresholds": {"toad": 0.5}})
    result = collect([tmp_path / "a", tmp_path / "b"], tmp_path / "db.duckdb", now=COLLECTED)
    (gap,) = messages(result.findings, "effort")
    assert "AM-01" in gap and "1 gap(s)" in gap and "0.50 h" in gap
    (clock,) = messages(result.findings, "clock", "warning")
    assert "AM-02" in clock and "unsynchronised" in clock
    drift = messages(result.findings, "config drift")
    assert any("thresholds.toad" in m and "AM-01" in m and "AM-02" in m for m in drift)
    assert any("config_hash" in m for m in drift)


def test_scheduled_off_time_is_not_an_effort_gap(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-01", minutes=3, streams=3, pause_minutes=45, scheduled_pauses=True)
    result = collect([tmp_path / "a"], tmp_path / "db.duckdb", now=COLLECTED)
    assert messages(result.findings, "effort", "warning") == []
    (off,) = messages(result.findings, "effort", "info")
    assert "AM-01" in off and "scheduled off for 1.50 h in 2 span(s)" in off


def test_cli_collect_prints_findings_and_a_missing_folder_is_a_finding(tmp_path: Path) -> None:
    write_card(tmp_path / "card", minutes=1)
    result = CliRunner().invoke(app, ["logs", "collect", str(tmp_path / "card"), str(tmp_path / "nope"),
                                      "--into", str(tmp_path / "db.duckdb"), "--parquet", str(tmp_path / "pq")])
    assert result.exit_code == 1, result.output  # an error-level finding: what was readable is still collected
    assert "is not a folder" in result.output and "Traceback" not in result.output
    assert (tmp_path / "pq" / "detections.parquet").stat().st_size > 0


def test_cli_reports_a_missing_database_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["logs", "summary", "--db", str(tmp_path / "none.duckdb"),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no collection database" in result.output
    assert "Traceback" not in result.output


# --- the desk side reports what happened (issue 10) -------------------------------------------------------------


def unfinished_card(root: Path, unit_id: str, *, stop_exit: int | None = None, gaps: tuple[float, ...] = ()) -> str:
    """A boot that logged for a minute and then died (no stop, log never closed), or stopped with ``stop_exit``."""
    log = CardLog(root, UnitIdentity(unit_id, "marsh-2024"), RATE, {"config_hash": "cfg-1"},
                  wall_clock=lambda: T0)
    log.open_stream(T0, 0, "ntp")
    log.event("start", sample=0)
    for hop in range(0, 60 * RATE - WINDOW + 1, HOP):
        log.effort(hop, hop + WINDOW)
        log.detections([event_at(hop, "toad")])
    for number, seconds in enumerate(gaps):
        start = (number + 1) * 10 * RATE
        log.event("gap", sample=start, end_sample=start + int(seconds * RATE), seconds=seconds)
    if stop_exit is None:
        log.flush(final=True)
    else:
        log.event("pipeline_failed", sample=HOP, reason="onnxruntime: bad input")
        log.event("stop", sample=60 * RATE, exit_code=stop_exit)
        log.close()
    return log.boot_id


def test_runs_that_ended_without_a_stop_or_on_a_failure_are_reported(tmp_path: Path) -> None:
    crashed = unfinished_card(tmp_path / "a", "AM-01")
    failed = unfinished_card(tmp_path / "b", "AM-02", stop_exit=3)
    write_card(tmp_path / "c", "AM-03", minutes=1)
    result = collect([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "db.duckdb", now=COLLECTED)
    runs = messages(result.findings, "runs", "warning")
    assert len(runs) == 2, runs
    assert any("AM-01" in m and "without a stop" in m and crashed in m and "last record 2024-05-01 21:01:00" in m
               for m in runs)
    assert any("AM-02" in m and "exit code 3" in m and "pipeline_failed" in m and failed in m for m in runs)
    assert not any("AM-03" in m for m in runs), "a log closed normally is not a crash"


def test_gap_events_become_effort_findings(tmp_path: Path) -> None:
    unfinished_card(tmp_path / "a", "AM-01", gaps=(12.5, 30.0))
    result = collect([tmp_path / "a"], tmp_path / "db.duckdb", now=COLLECTED)
    (gap,) = messages(result.findings, "effort", "warning")
    assert "AM-01" in gap and "2 gap(s)" in gap and "42.5 s" in gap and "largest 30.0 s at 2024-05-01 21:00:20" in gap


def test_a_unit_id_that_is_not_utf8_is_a_card_error_not_a_phantom_unit(tmp_path: Path) -> None:
    write_card(tmp_path / "card", "AM-01", minutes=2)
    (segment,) = (tmp_path / "card" / "detections").glob("*.csv")
    lines = segment.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"AM-01", b"AM-\xff1")
    segment.write_bytes(b"\n".join(lines))
    db = tmp_path / "db.duckdb"
    result = collect([tmp_path / "card"], db, now=COLLECTED)
    (error,) = [m for m in messages(result.findings, "card", "error") if "not UTF-8" in m]
    assert segment.name in error and "1 row(s)" in error
    assert count(db, "SELECT count(DISTINCT unit_id) FROM card_boots") == 1
    assert count(db, "SELECT count(*) FROM detections") == 22, "the corrupt row is dropped, the others kept"


def test_a_damaged_file_name_is_a_card_error_not_a_crash(tmp_path: Path) -> None:
    log = write_card(tmp_path / "card", "AM-01", minutes=2)
    (segment,) = (tmp_path / "card" / "detections").glob("*.csv")
    damaged = os.fsencode(tmp_path / "card" / "detections") + f"/2024-05-01_{log.boot_id}_00".encode() + b"\xff.csv"
    with open(damaged, "wb") as handle:
        handle.write(segment.read_bytes())
    db = tmp_path / "db.duckdb"
    result = collect([tmp_path / "card"], db, now=COLLECTED)
    assert any("file name damaged" in m for m in messages(result.findings, "card", "error"))
    assert count(db, "SELECT count(*) FROM detections") == 23


def test_back_to_back_boots_of_one_unit_on_two_cards_are_not_two_recorders(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-07", minutes=3)
    write_card(tmp_path / "b", "AM-07", minutes=3, start=T0 + timedelta(minutes=3))
    result = collect([tmp_path / "a", tmp_path / "b"], tmp_path / "db.duckdb", now=COLLECTED)
    assert not messages(result.findings, "unit ids", "error")
    assert any("different times" in m for m in messages(result.findings, "unit ids", "info"))


def test_overlapping_boots_never_count_more_than_the_minute_as_analysed(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-07", minutes=3)
    write_card(tmp_path / "b", "AM-07", minutes=3)
    db = tmp_path / "db.duckdb"
    collect([tmp_path / "a", tmp_path / "b"], db, now=COLLECTED)
    assert count(db, "SELECT max(s) FROM (SELECT sum(analysed_s) AS s FROM effort GROUP BY minute_utc)") == 120
    assert count(db, "SELECT max(analysed_s) FROM unit_effort") == 60
    assert count(db, "SELECT sum(analysed_s) FROM unit_effort WHERE unit_id = 'AM-07'") == 3 * 60


def test_re_collecting_does_not_grow_the_findings_table(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-01", minutes=3, streams=2, pause_minutes=30)
    write_card(tmp_path / "b", "AM-02", minutes=3, clock_sync="unsynchronised")
    db = tmp_path / "db.duckdb"
    collect([tmp_path / "a", tmp_path / "b"], db, now=COLLECTED)
    first = count(db, "SELECT count(*) FROM findings")
    assert first > 0
    collect([tmp_path / "a", tmp_path / "b"], db, now=COLLECTED)
    collect([tmp_path / "b"], db, now=COLLECTED)
    assert count(db, "SELECT count(*) FROM findings") == first


def resolved_config(unit_id: str, highpass_hz: int, hop_s: float) -> dict[str, object]:
    """What the per-boot manifest carries in ``boot_info["config"]`` (the whole resolved unit config)."""
    return {"unit": {"unit_id": unit_id, "deployment_id": "marsh-2024"},
            "audio": {"highpass_hz": highpass_hz, "device": "pulse"}, "analysis": {"hop_s": hop_s, "cooldown_s": 30},
            "schedule": {"mode": "always"}}


def test_config_drift_names_the_setting_that_differs_between_units_and_boots(tmp_path: Path) -> None:
    write_card(tmp_path / "a", "AM-01", minutes=2,
               boot_info={"config_hash": "h1", "hop_s": 5.0, "config": resolved_config("AM-01", 100, 5.0)})
    write_card(tmp_path / "b", "AM-02", minutes=2,
               boot_info={"config_hash": "h2", "hop_s": 5.0, "config": resolved_config("AM-02", 0, 5.0)})
    write_card(tmp_path / "b", "AM-02", minutes=2, start=T0 + timedelta(days=1), boot_id="20240502T210000Z-00000b",
               boot_info={"config_hash": "h3", "hop_s": 2.5, "config": resolved_config("AM-02", 0, 2.5)})
    result = collect([tmp_path / "a", tmp_path / "b"], tmp_path / "db.duckdb", now=COLLECTED)
    drift = messages(result.findings, "config drift")
    assert any("'audio.highpass_hz'" in m and "100 on AM-01" in m and "0 on AM-02" in m for m in drift), drift
    assert any("AM-02" in m and "20240502T210000Z-00000b" in m and "analysis.hop_s 5.0 -> 2.5" in m for m in drift)
    assert not any("config_hash" in m for m in drift), "the hash only repeats what the settings already say"
    assert not any("'hop_s'" in m for m in drift), "a copy of a config key is not reported twice"
    assert not any("unit_id" in m for m in drift), "each unit's own id is not drift"


def test_a_gap_event_without_a_length_is_still_reported(tmp_path: Path) -> None:
    log = CardLog(tmp_path / "a", UnitIdentity("AM-01", "marsh-2024"), RATE, {}, wall_clock=lambda: T0)
    log.open_stream(T0, 0, "ntp")
    log.event("gap", sample=HOP)
    log.close()
    result = collect([tmp_path / "a"], tmp_path / "db.duckdb", now=COLLECTED)
    (gap,) = messages(result.findings, "effort", "warning")
    assert "1 gap(s)" in gap and "length not recorded" in gap
