"""Power cut mid-drain (the FUSE card of tests/powercut/ that forgets what was not fsync'd): the uplink only ever
sent rows the card kept, the cursor on the card never claims a row the broker did not acknowledge, and the next
boot delivers the rest: the live database ends equal to the card, nothing twice.

fsync is slowed to an SD card's pace so that written-but-not-yet-durable lines exist long enough to be read: an
outbox that reads the running boot's open segments past what the card log fsync'd fails this test (checked)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from edge.card import segments
from edge.card.cardformat import OPEN_SUFFIX
from edge.uplink.outbox import Cursor
from tests.mqtt_broker import Broker
from tests.powercut.harness import power_switch
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

if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine", allow_module_level=True)
pytest.importorskip("paho.mqtt.client")
CUTS = 6
MAX_HOPS_PER_BOOT = 400
SLOW_FSYNC_S = 0.01


def surviving_size(card: Path, segment: str) -> int:
    for name in (segment, segment + OPEN_SUFFIX):
        if (card / name).exists():
            return (card / name).stat().st_size
    return 0


def test_power_cut_mid_drain_sends_only_durable_rows_and_the_cursor_never_claims_unsent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments, "MAX_SEGMENT_BYTES", 3000)  # segments rotate (are sealed) during the drain
    real_fsync = os.fsync

    def sd_card_fsync(fd: int) -> None:  # an SD card takes its time: written-but-not-yet-durable lasts a while
        time.sleep(SLOW_FSYNC_S)
        real_fsync(fd)

    monkeypatch.setattr(segments.os, "fsync", sd_card_fsync)
    broker = Broker(tmp_path / "broker")
    watch = Subscriber(broker)
    db = tmp_path / "season.duckdb"
    rng = random.Random(20240501)
    try:
        with power_switch(tmp_path / "mnt") as switch, live_desk(broker.url, db) as desk:
            card = tmp_path / "mnt"
            for boot in range(CUTS):
                log = unit_log(card, broker.url, boot_id=f"20240501T0{boot}0000Z-cut{boot:03d}",
                               max_rows_per_s=150, rows_per_message=3, max_inflight=2)
                open_stream(log)
                switch.arm(rng.randint(40, 400), "torn" if boot % 2 else "clean", rng.randint(0, 10**6))
                hop = 0
                while not switch.is_off() and hop < MAX_HOPS_PER_BOOT:
                    hop = write_hops(log, hop, 1)
                assert switch.is_off(), "the power cut did not land"
                log.uplink.stop(0)  # the unit is dead; its uplink thread must not outlive the test
                switch.revive()
                delivered = watch.delivered()
                for segment, end in delivered.items():
                    if not segment.startswith("boots/"):
                        kept = surviving_size(card, segment)
                        assert end <= kept, f"boot {boot}: {segment} sent up to byte {end}, the card kept {kept}"
                for segment, end in Cursor(card).acked.items():
                    if not segment.startswith("boots/"):
                        assert end <= delivered.get(segment, 0), f"boot {boot}: cursor claims unsent {segment}:{end}"
                        assert end <= surviving_size(card, segment)
            assert sum(desk_added(desk).values()) < sum(card_counts(card).values()), "no cut landed mid-drain"
            last = unit_log(card, broker.url, boot_id="20240502T000000Z-final0", max_rows_per_s=10_000)
            last.close()
            expected = card_counts(card)
            wait_for(lambda: desk_added(desk) == expected, 60, f"the desk to hold {expected}",
                     lambda: desk_added(desk))
        rows = db_rows(db)
        assert {t: n for t, (n, _) in rows.items()} == expected
        assert all(n == distinct for n, distinct in rows.values())
    finally:
        watch.close()
        broker.stop()
