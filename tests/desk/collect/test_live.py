"""The unit on the air against a real mosquitto: what the live database holds equals what the card holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from desk.collect.database import connect
from desk.collect.ingest import collect
from desk.report.page import write_report
from edge.uplink.messages import decode_batch
from tests.mqtt_broker import Broker
from tests.uplink_support import (
    TABLES,
    card_counts,
    db_rows,
    desk_added,
    live_desk,
    open_stream,
    unit_log,
    wait_for,
    write_hops,
)

pytest.importorskip("duckdb")


class Recorder:
    """A second subscriber that keeps every data message in arrival order (to check order and gaps)."""

    def __init__(self, url_port: int) -> None:
        self.messages: list[tuple[str, int, int]] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="recorder", clean_session=False)
        client.on_message = lambda _c, _u, m: self.messages.append(_position(m.payload))
        client.on_connect = lambda c, *_: c.subscribe("biolingual/+/data/#", qos=1)
        client.connect("127.0.0.1", url_port)
        client.loop_start()
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _position(payload: bytes) -> tuple[str, int, int]:
    _, batch = decode_batch(payload)
    return batch.segment, batch.start, batch.end


def health_of(report: Path) -> str:
    """The report's 'last heard on the air' of unit AM-01, read from the data embedded in the page."""
    text = report.read_text(encoding="utf-8")
    start = text.index('<script id="season-data"')
    data = json.loads(text[text.index(">", start) + 1:text.index("</script>", start)])
    return next(row["last_heard"] for row in data["health"]["units"] if row["unit_id"] == "AM-01")


def assert_in_order(messages: list[tuple[str, int, int]]) -> None:
    """Per segment, every message starts where an earlier one ended or before (a re-send): never a gap."""
    reached: dict[str, int] = {}
    for segment, start, end in messages:
        if segment in reached:
            assert start <= reached[segment], f"{segment}: gap before byte {start} (had up to {reached[segment]})"
        reached[segment] = max(reached.get(segment, 0), end)


def test_broker_outage_mid_run_everything_arrives_in_order_once(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    recorder = Recorder(broker.port)
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    try:
        with live_desk(broker.url, db) as desk:
            log = unit_log(card, broker.url, max_rows_per_s=10_000)
            open_stream(log)
            hop = write_hops(log, 0, 20)
            wait_for(lambda: desk_added(desk)["detections"] == 20, what="the first 20 detections at the desk")
            broker.stop()
            hop = write_hops(log, hop, 30)  # the unit keeps listening and writing while the broker is down
            wait_for(lambda: not log.uplink.stats.connected, what="the unit to notice the outage")
            broker.start()
            hop = write_hops(log, hop, 20)
            wait_for(lambda: log.uplink.stats.connected, 30, "the unit to reconnect")
            log.close()
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 60, f"the desk to hold {expected}",
                     lambda: (desk_added(desk), log.uplink.stats))
        rows = db_rows(db)
        assert {t: rows[t][0] for t in TABLES} == expected  # nothing lost
        assert all(n == distinct for n, distinct in rows.values())  # nothing twice
        assert expected["detections"] == 70
        assert_in_order(recorder.messages)
        assert log.uplink.stats.connects >= 2  # it lost the broker and came back
        # a later `logs collect` of the same card finds nothing missing: it adds no row
        result = collect([card], db)
        assert all(result.added.get(t, 0) == 0 for t in TABLES), result.added
    finally:
        recorder.close()
        broker.stop()


def test_collect_after_live_adds_exactly_the_rows_that_never_came_over_the_air(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    try:
        with live_desk(broker.url, db) as desk:
            log = unit_log(card, broker.url, max_rows_per_s=30, rows_per_message=4, max_inflight=1)
            open_stream(log)
            write_hops(log, 0, 60)
            wait_for(lambda: desk_added(desk)["effort"] >= 10, 30, "part of the card at the desk")
            log.uplink.stop(0)  # the modem dies mid-drain: the rest stays on the card
            log.card.close()
            wait_for(lambda: sum(desk_added(desk).values()) == log.uplink.stats.rows_acked - 1, 10,
                     "the desk to commit what the broker acknowledged", lambda: (desk_added(desk), log.uplink.stats))
            live = desk_added(desk)
        on_card = card_counts(card)
        assert all(live[t] <= on_card[t] for t in TABLES) and live != on_card
        result = collect([card], db)
        assert {t: result.added.get(t, 0) for t in TABLES} == {t: on_card[t] - live[t] for t in TABLES}
        rows = db_rows(db)
        assert {t: n for t, (n, _) in rows.items()} == on_card
        assert all(n == distinct for n, distinct in rows.values())
        assert collect([card], db).added.get("detections", 0) == 0  # and again: nothing
        # the season report names when each unit was last heard on the air, and flags the silent ones
        con = connect(db, read_only=True)
        try:
            heard = con.execute("SELECT last_heard_utc FROM live_units WHERE unit_id = 'AM-01'").fetchone()[0]
            soon, later = (heard.replace(tzinfo=timezone.utc) + timedelta(seconds=s) for s in (60, 181))
            assert health_of(write_report(con, tmp_path / "r1.html", now=soon).path) == \
                f"{heard:%Y-%m-%d %H:%M:%S} (offline)"
            assert health_of(write_report(con, tmp_path / "r2.html", now=later).path).endswith("SILENT > 3 × 60 s")
        finally:
            con.close()
    finally:
        broker.stop()


def test_a_unit_stopping_during_a_long_backoff_tries_once_more_and_drains(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    try:
        with live_desk(broker.url, db) as desk:
            broker.stop()
            log = unit_log(card, broker.url, max_rows_per_s=10_000)
            open_stream(log)
            write_hops(log, 0, 10)
            wait_for(lambda: log.uplink.stats.failures >= 4, 30, "the unit deep in back-off (next wait >= 4 s)")
            broker.start()
            started = time.monotonic()
            log.close()  # the daemon stops: one last try within the drain budget
            assert time.monotonic() - started < 4.0
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 30, f"the desk to hold {expected}",
                     lambda: desk_added(desk))
    finally:
        broker.stop()


def test_logs_live_command_writes_the_card_rows_rejects_strangers_and_lists_units(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    repo = Path(__file__).resolve().parents[3]
    desk = subprocess.Popen([sys.executable, "-m", "edge", "logs", "live", "--broker", broker.url, "--into", str(db),
                             "--for", "10"], stderr=subprocess.PIPE, text=True, cwd=repo,
                            env={**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "200"})
    try:
        assert desk.stderr is not None
        first = desk.stderr.readline()
        assert first.startswith("listening on mqtt://127.0.0.1:"), first
        stranger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        stranger.connect("127.0.0.1", broker.port)
        stranger.loop_start()
        stranger.publish("biolingual/AM-01/data/detections", b"<script>not ours</script>", qos=1).wait_for_publish(5)
        stranger.disconnect()
        stranger.loop_stop()
        log = unit_log(card, broker.url)
        open_stream(log)
        write_hops(log, 0, 8)
        log.close()
        output = first + desk.communicate(timeout=30)[1]
    finally:
        if desk.poll() is None:
            desk.kill()
        broker.stop()
    assert desk.returncode == 0, output
    expected = card_counts(card)
    assert {t: n for t, (n, _) in db_rows(db).items()} == expected
    assert "not a biolingual-edge uplink message" in output and "1 rejected" in output
    assert f", {expected['detections']} detections, " in output
    assert "AM-01: last heard" in output and "status offline" in output and "SILENT" not in output


def test_the_broker_keeps_what_arrives_while_the_desk_is_away(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    try:
        with live_desk(broker.url, db):
            pass  # the desk subscribed once (a persistent session), then went home
        log = unit_log(card, broker.url)
        open_stream(log)
        write_hops(log, 0, 12)
        log.close()
        with live_desk(broker.url, db) as desk:
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 30, f"the queued rows at the desk: {expected}",
                     lambda: desk_added(desk))
    finally:
        broker.stop()
