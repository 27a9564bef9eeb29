"""The uplink against a real mosquitto: failures are events and never stop the card; TLS, passwords, liveness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desk.collect.cards import read_card
from edge.config.uplink import AlertRule
from edge.uplink.alerts import AlertRules
from edge.uplink.link import read_credentials
from edge.uplink.messages import OFFLINE, OFFLINE_UNCLEAN, ONLINE, UplinkError
from edge.uplink.outbox import Cursor
from tests.cardlog_support import HOP, event_at, write_card
from tests.mqtt_broker import Broker, credentials_file, make_tls
from tests.uplink_support import (
    Subscriber,
    card_counts,
    db_rows,
    desk_added,
    live_desk,
    open_stream,
    unit_log,
    wait_for,
    write_hops,
)

pytest.importorskip("paho.mqtt.client")
REPO = Path(__file__).resolve().parents[3]


def card_events(card: Path) -> list[dict]:
    return [record for record, _ in read_card(card).events]


def test_wrong_password_is_an_event_with_capped_backoff_and_the_card_keeps_writing(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", users={"unit": "right"})
    card = tmp_path / "card"
    try:
        log = unit_log(card, broker.url, credentials_file=credentials_file(tmp_path / "creds", "unit", "wrong"),
                       backoff_max_s=0.5)
        open_stream(log)
        hop = write_hops(log, 0, 5)
        wait_for(lambda: log.uplink.stats.failures >= 5, 30, "five refused connections")
        hop = write_hops(log, hop, 5)  # capture and the card go on
        log.close()
        failed = [e for e in card_events(card) if e["kind"] == "uplink_failed"]
        assert len(failed) == 1  # one event per distinct failure, not one per retry
        assert "refused" in failed[0]["error"] and "password" in failed[0]["hint"]
        assert "right" not in json.dumps(card_events(card)) and "wrong" not in json.dumps(card_events(card))
        assert max(log.uplink.stats.backoff) <= 0.5  # capped
        assert card_counts(card)["detections"] == 10
    finally:
        broker.stop()


def test_expired_broker_certificate_is_an_event_not_a_crash(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls", expired=True)
    broker = Broker(tmp_path / "broker", tls=tls)
    card = tmp_path / "card"
    try:
        log = unit_log(card, broker.url, ca_file=str(tls.ca), backoff_max_s=0.5)
        open_stream(log)
        write_hops(log, 0, 3)
        wait_for(lambda: log.uplink.stats.failures >= 2, 30, "refused TLS handshakes")
        write_hops(log, 3, 3)
        log.close()
        failed = [e for e in card_events(card) if e["kind"] == "uplink_failed"]
        assert failed and "certificate" in failed[0]["error"].lower() and "TLS" in failed[0]["error"]
        assert card_counts(card)["detections"] == 6
    finally:
        broker.stop()


def test_tls_and_password_deliver_everything_and_status_is_retained(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    broker = Broker(tmp_path / "broker", tls=tls, users={"unit": "s3cret:x", "desk": "d"})
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    unit_creds = credentials_file(tmp_path / "unit.creds", "unit", "s3cret:x")
    desk_creds = credentials_file(tmp_path / "desk.creds", "desk", "d")
    try:
        with live_desk(broker.url, db, credentials_file=str(desk_creds), ca_file=str(tls.ca)) as desk:
            log = unit_log(card, broker.url, credentials_file=str(unit_creds), ca_file=str(tls.ca))
            open_stream(log)
            write_hops(log, 0, 12)
            wait_for(lambda: log.uplink.stats.connected, 15, "the unit to connect over TLS")
            log.close()
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 30, f"the desk to hold {expected}",
                     lambda: desk_added(desk))
        assert {t: n for t, (n, _) in db_rows(db).items()} == expected
        assert "s3cret" not in (card / "boots").joinpath(next((card / "boots").iterdir()).name).read_text()
        # the last word of the unit is retained: a desk that subscribes later learns it is offline (clean stop)
        late = Subscriber(broker, "biolingual/+/status", ("desk", "d"), ca_certs=str(tls.ca))
        wait_for(lambda: late.statuses(), 10, "the retained status")
        assert late.statuses() == [OFFLINE]
        late.close()
    finally:
        broker.stop()


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("unit:pw\n")
    os.chmod(creds, 0o644)
    with pytest.raises(UplinkError, match="readable by others") as info:
        read_credentials(creds)
    assert "chmod 600" in info.value.hint


def run_unit(card: Path, url: str, hops: int, rate: float) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.uplink_unit", str(card), url, str(hops), str(rate)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout is not None and process.stdout.readline().strip() == "written"
    return process


def test_kill9_mid_drain_cursor_never_claims_unsent_and_resend_is_only_the_unacked(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    watch = Subscriber(broker)
    card, db = tmp_path / "card", tmp_path / "season.duckdb"
    try:
        with live_desk(broker.url, db) as desk:
            unit = run_unit(card, broker.url, 120, rate=20.0)  # ~300 rows at 20 rows/s: ~15 s to drain
            cursor = card / "uplink" / "cursor.json"
            wait_for(lambda: cursor.exists() and sum(Cursor(card).acked.values()) > 0, 30, "a saved cursor")
            wait_for(lambda: ONLINE in watch.statuses(), 10, "the unit's online status")
            unit.send_signal(signal.SIGKILL)
            unit.wait(10)
            wait_for(lambda: OFFLINE_UNCLEAN in watch.statuses(), 10, "the last will (offline-unclean)")
            delivered: dict[str, int] = {}
            for segment, _, end in watch.data():
                delivered[segment] = max(delivered.get(segment, 0), end)
            claimed = Cursor(card).acked
            for segment, end in claimed.items():
                if not segment.startswith("boots/"):
                    assert end <= delivered.get(segment, 0), f"cursor claims {segment} up to {end}, unsent"
            assert card_counts(card)["detections"] == 120
            assert sum(desk_added(desk).values()) < sum(card_counts(card).values())  # killed mid-drain
            # the next boot drains the rest: it starts each segment where the cursor says, not before
            before = len(watch.data())
            log = unit_log(card, broker.url, max_rows_per_s=10_000)
            log.close()
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 30, f"the desk to hold {expected}",
                     lambda: desk_added(desk))
            resent = {}
            for segment, start, _ in watch.data()[before:]:
                resent.setdefault(segment, start)
            for segment, start in resent.items():
                if segment in claimed:
                    assert start == claimed[segment], f"{segment}: re-sent from {start}, cursor said {claimed[segment]}"
        rows = db_rows(db)
        assert all(n == distinct for n, distinct in rows.values())
        assert {t: n for t, (n, _) in rows.items()} == expected
    finally:
        watch.close()
        broker.stop()


def test_alerts_overtake_a_day_of_backlog_and_arrive_before_their_row(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    watch = Subscriber(broker)
    card = tmp_path / "card"
    try:
        write_card(card, "AM-01", minutes=30)  # an earlier boot's rows, still waiting: ~900 rows
        rules = AlertRules([AlertRule(label="toad", min_score=2.0, cooldown_s=0)])
        log = unit_log(card, broker.url, rules=rules, max_rows_per_s=20, rows_per_message=5)
        wait_for(lambda: log.uplink.stats.connected, 15, "the unit to connect")
        open_stream(log)
        log.detections([event_at(0, "toad", score=1.0), event_at(HOP, "toad", score=3.0)])
        log.flush()
        started = time.monotonic()
        wait_for(lambda: any(t.endswith("/alert") for t, _, _ in watch.messages), 5, "the alert")
        assert time.monotonic() - started < 2.0
        alerts = [json.loads(p) for t, p, _ in watch.messages if t.endswith("/alert")]
        assert [(a["label"], a["score"], a["start_sample"]) for a in alerts] == [("toad", 3.0, HOP)]
        this_boot = [s for s, _, _ in watch.data() if log.card.boot_id in s and s.startswith("detections/")]
        assert not this_boot  # its row is still behind the backlog, which drains at 20 rows/s
        assert log.uplink.stats.rows_sent < 200
        log.uplink.stop(0)
        log.card.close()
    finally:
        watch.close()
        broker.stop()


def socket_states(pid: int) -> list[str]:
    """TCP/UDP states (``0A`` = LISTEN, ``01`` = ESTABLISHED, ``07`` = UDP bound) of the sockets ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    states = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                states.append(f"{table}:{fields[3]}")
    return states


def test_the_unit_never_listens(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    try:
        unit = run_unit(tmp_path / "card", broker.url, 5, rate=1000.0)
        try:
            # on the air: its outgoing connection to the broker
            states = wait_for(lambda: [s for s in socket_states(unit.pid) if s.endswith(":01")] and
                              socket_states(unit.pid), 15, "the unit's connection")
            assert not [s for s in states if s.endswith(":0A") or s.startswith("udp")], states  # no listener
        finally:
            unit.kill()
            unit.wait(10)
    finally:
        broker.stop()


def test_client_certificate_required_by_the_broker(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    broker = Broker(tmp_path / "broker", tls=tls, require_certificate=True)
    try:
        without = unit_log(tmp_path / "card-a", broker.url, ca_file=str(tls.ca), backoff_max_s=0.5)
        wait_for(lambda: without.uplink.stats.failures >= 1, 15, "a refused handshake without a client certificate")
        assert not without.uplink.stats.connects
        without.close()
        card = tmp_path / "card-b"
        log = unit_log(card, broker.url, ca_file=str(tls.ca), client_cert=str(tls.client_cert),
                       client_key=str(tls.client_key))
        open_stream(log)
        write_hops(log, 0, 4)
        wait_for(lambda: log.uplink.stats.connected, 15, "the unit to connect with its certificate")
        wait_for(lambda: log.uplink.stats.rows_acked >= 9, 15, "its rows acknowledged", lambda: log.uplink.stats)
        log.close()
    finally:
        broker.stop()


def test_dns_failure_is_an_event(tmp_path: Path) -> None:
    card = tmp_path / "card"
    log = unit_log(card, "mqtt://no-such-broker.invalid", backoff_max_s=0.5)
    open_stream(log)
    write_hops(log, 0, 2)
    wait_for(lambda: log.uplink.stats.failures >= 1, 30, "the failed lookup")
    log.close()
    failed = [e for e in card_events(card) if e["kind"] == "uplink_failed"]
    assert failed and "cannot resolve no-such-broker.invalid" in failed[0]["error"]
    assert card_counts(card)["detections"] == 2
