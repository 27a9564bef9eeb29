"""The field daemon on the air: `run` with an `uplink:` section, its alerts, `check`, and a unit without paho-mqtt."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from desk.collect.cards import read_card
from desk.collect.database import connect
from edge.config.loader import resolve_config
from edge.config.schema import UnitConfig
from edge.ops.checks import Status, check_uplink
from edge.ops.setup import InputOptions, build_daemon
from tests.mqtt_broker import Broker, credentials_file
from tests.uplink_support import card_counts, db_rows, desk_added, live_desk, wait_for


def unit_config(bundle: Path, labels: Path, log_dir: Path, **overrides: object) -> UnitConfig:
    base = {"model.bundle": str(bundle), "analysis.labels": str(labels), "storage.log_dir": str(log_dir),
            "analysis.threshold": 0.5, "analysis.score_mode": "softmax", "health.heartbeat_s": 3600,
            "unit.unit_id": "pole-7"}
    return resolve_config(None, None, {**base, **overrides})


def test_run_on_the_air_desk_equals_card_and_the_toad_alert_comes_first(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    card.mkdir()
    config = unit_config(example_bundle, example_labels[0], card, **{
        "uplink.url": broker.url, "uplink.alerts": [{"label": "toad", "min_score": 0.5, "cooldown_s": 0}]})
    try:
        with live_desk(broker.url, db) as desk:
            assert build_daemon(config, InputOptions(toad_in_night, fast=True)).run() == 0
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 30, f"the desk to hold {expected}",
                     lambda: desk_added(desk))
            wait_for(lambda: any(line.startswith("ALERT pole-7: toad") for line in desk.lines), 10, "the alert")
        rows = db_rows(db)
        assert {t: n for t, (n, _) in rows.items()} == expected and expected["detections"] >= 1
        con = connect(db, read_only=True)
        try:
            alerts = con.execute("SELECT label, start_sample FROM live_alerts").fetchall()
            assert alerts == [("toad", 35 * 48_000)]
            status = con.execute("SELECT status FROM live_units WHERE unit_id = 'pole-7'").fetchone()
            assert status == ("offline",)
        finally:
            con.close()
        kinds = [r["kind"] for r, _ in read_card(card).events]
        assert "uplink_connected" in kinds
        row = check_uplink(config)
        assert row.status is Status.PASS and "0.0 KiB on the card not yet acknowledged" in row.detail
        broker.stop()
        row = check_uplink(config)
        assert row.status is Status.FAIL and "cannot reach" in row.detail
    finally:
        broker.stop()


def test_unit_without_paho_runs_as_today_and_check_says_unavailable(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "paho" or m.startswith("paho.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "paho", None)  # import paho... raises ImportError
    config = unit_config(example_bundle, example_labels[0], tmp_path, **{"uplink.url": "mqtt://127.0.0.1:1"})
    assert build_daemon(config, InputOptions(toad_in_night, fast=True)).run() == 0
    events = [r for r, _ in read_card(tmp_path).events]
    assert [e["reason"] for e in events if e["kind"] == "uplink_unavailable"] == ["paho-mqtt is not installed"]
    assert card_counts(tmp_path)["detections"] >= 1
    row = check_uplink(config)
    assert row.status is Status.WARN and "paho-mqtt is not installed" in row.detail
    assert check_uplink(unit_config(example_bundle, example_labels[0], tmp_path)).status is Status.SKIP


def test_wrong_password_never_stops_listening(example_bundle: Path, example_labels: tuple[Path, Path],
                                              toad_in_night: Path, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", users={"pole-7": "right"})
    card = tmp_path / "card"
    card.mkdir()
    creds = credentials_file(tmp_path / "creds", "pole-7", "Hunter2-not-it")
    config = unit_config(example_bundle, example_labels[0], card, **{
        "uplink.url": broker.url, "uplink.credentials_file": str(creds), "uplink.backoff_max_s": 0.5})
    try:
        assert build_daemon(config, InputOptions(toad_in_night, fast=True)).run() == 0
        row = check_uplink(config)
    finally:
        broker.stop()
    assert row.status is Status.FAIL and "Not authorized" in row.detail and "uplink.credentials_file" in row.detail
    assert "KiB on the card not yet acknowledged" in row.detail
    events = [r for r, _ in read_card(card).events]
    failed = [e for e in events if e["kind"] == "uplink_failed"]
    assert len(failed) == 1 and "Not authorized" in failed[0]["error"]
    effort = read_card(card).effort
    seconds = sum(float(r[effort.columns.index("analysed_s")]) for r in effort.rows)
    assert seconds == pytest.approx(60.0)  # the whole minute analysed, as without an uplink
    assert [e["exit_code"] for e in events if e["kind"] == "stop"] == [0]
    boots = "".join(p.read_text() for p in (card / "boots").iterdir())
    assert "Hunter2" not in boots and str(creds) in boots  # the file's path is recorded, never the password
