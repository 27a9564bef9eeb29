"""Helpers for the uplink tests: a unit's card log with an uplink, the desk's `logs live` in a thread, and the
Jepsen-style count of what the card holds against what the live database holds."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from desk.collect.cards import read_card
from desk.collect.database import KEYS, connect
from desk.collect.live import LiveCollector, live_client_id
from edge.card.cardlog import CardLog, UnitIdentity
from edge.config.uplink import UplinkSection
from edge.uplink.alerts import AlertRules
from edge.uplink.link import link_settings
from edge.uplink.messages import decode_batch
from edge.uplink.runlog import UplinkLog
from edge.uplink.service import Uplink
from tests.cardlog_support import HOP, LABELS, RATE, T0, WINDOW, event_at
from tests.mqtt_broker import Broker

TABLES = ("detections", "effort", "events", "health")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             state: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it is truthy; on timeout say what was awaited and, with ``state``, what there was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                         + ("" if state is None else f"; have {state()}"))


def section(url: str, **fields: Any) -> UplinkSection:
    return UplinkSection.model_validate({"url": url, **fields})


def unit_log(card: Path, url: str, unit: str = "AM-01", boot_id: str | None = None,
             rules: AlertRules | None = None, **fields: Any) -> UplinkLog:
    """A card log of ``unit`` at ``card`` with an uplink to ``url`` (started)."""
    log = CardLog(card, UnitIdentity(unit, "marsh-2024"), RATE, {"config_hash": "cfg"}, boot_id=boot_id,
                  wall_clock=lambda: T0)
    cfg = section(url, **fields)
    uplink = Uplink(card, cfg, unit, "marsh-2024", log.boot_id, log.durable_segments)
    return UplinkLog(log, uplink, rules)


def write_hops(log: Any, first: int, count: int, health_every: int = 4) -> int:
    """``count`` hops of effort + one detection each (health every few), flushed per hop like the daemon."""
    for index in range(first, first + count):
        start = index * HOP
        log.effort(start, start + WINDOW)
        log.detections([event_at(start, LABELS[index % len(LABELS)])])
        if index % health_every == 0:
            log.health({"temperature_c": 30.0})
        log.flush()
    return first + count


def open_stream(log: Any, sample: int = 0) -> None:
    log.open_stream(T0 + timedelta(seconds=sample / RATE), sample, "ntp")


@contextlib.contextmanager
def live_desk(url: str, db: Path, prefix: str = "biolingual", **fields: Any) -> Iterator[LiveCollector]:
    """`logs live` running in a thread until the block ends."""
    settings = link_settings(section(url, **fields), live_client_id(db), clean_session=False)
    lines: list[str] = []
    collector = LiveCollector(db, settings, prefix, on_line=lines.append)
    collector.lines = lines  # type: ignore[attr-defined]
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: any(line.startswith("listening") for line in lines), 15, "the desk to subscribe")
    try:
        yield collector
    finally:
        stop.set()
        thread.join(30)


def card_keys(card: Path) -> dict[str, set[tuple[Any, ...]]]:
    """Natural keys of every row on the card, as `logs collect` reads it, typed like the database."""
    contents = read_card(card)
    out: dict[str, set[tuple[Any, ...]]] = {}
    for table in ("detections", "effort"):
        t = getattr(contents, table)
        idx = [t.columns.index(k) for k in KEYS[table]]
        out[table] = {tuple(row[i] for i in idx) for row in t.rows}
    for table in ("events", "health"):
        out[table] = {(r["unit_id"], r["boot_id"], r["seq"]) for r, _ in getattr(contents, table)}
    return out


def card_counts(card: Path) -> dict[str, int]:
    return {table: len(keys) for table, keys in card_keys(card).items()}


def db_rows(db: Path) -> dict[str, tuple[int, int]]:
    """Per table: (rows, distinct natural keys) in the database."""
    con = connect(db, read_only=True)
    try:
        return {table: tuple(con.execute(f"SELECT count(*), count(DISTINCT ({', '.join(KEYS[table])})) "
                                         f"FROM {table}").fetchone())  # type: ignore[misc]
                for table in TABLES}
    finally:
        con.close()


def desk_added(collector: LiveCollector) -> dict[str, int]:
    return {table: collector.counts.added.get(table, 0) for table in TABLES}


class Subscriber:
    """A plain MQTT client keeping every message (topic, payload, retained) in arrival order."""

    def __init__(self, broker: Broker, topic: str = "biolingual/#", user: tuple[str, str] | None = None,
                 **tls: object) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if tls:
            client.tls_set(**tls)
        if user is not None:
            client.username_pw_set(*user)
        client.on_message = self._keep
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        self.client = client

    def _keep(self, _c: object, _u: object, message: object) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, message.retain))  # type: ignore[attr-defined]

    def statuses(self) -> list[str]:
        with self.lock:
            return [json.loads(p)["state"] for t, p, _ in self.messages if t.endswith("/status")]

    def data(self) -> list[tuple[str, int, int]]:
        with self.lock:
            batches = [decode_batch(p)[1] for t, p, _ in self.messages if "/data/" in t]
        return [(b.segment, b.start, b.end) for b in batches]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def delivered(self) -> dict[str, int]:
        """Per segment, the furthest byte any data message reached."""
        out: dict[str, int] = {}
        for segment, _, end in self.data():
            out[segment] = max(out.get(segment, 0), end)
        return out
