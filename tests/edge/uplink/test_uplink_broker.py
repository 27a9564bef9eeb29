"""The uplink against a real mosquitto: failures are events and never stop the card; TLS, passwords, liveness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from desk.collect.cards import read_card
from edge.uplink.link import read_credentials
from edge.uplink.messages import OFFLINE, OFFLINE_UNCLEAN, ONLINE, UplinkError
from edge.uplink.outbox import Cursor
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
