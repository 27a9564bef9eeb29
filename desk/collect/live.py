"""``logs live``: the units' uplink messages -> the same tables ``logs collect`` fills, keyed the same way.

Rows arrive at least once (a unit re-sends what its broker did not acknowledge) and land exactly once: they go
through :func:`desk.collect.database.ingest`, which skips rows whose natural key is already stored; a later
``logs collect`` of the card adds exactly the rows that never came over the air. Messages are acknowledged to the
broker only after their rows are committed (manual acks, persistent session), so a desk that dies loses nothing
the broker still holds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desk.collect.cards import CardContents, Table
from desk.collect.database import connect, ingest, run
from edge.uplink.link import Link, LinkSettings
from edge.uplink.messages import BOOTS_KIND, UplinkError, decode_batch

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

LIVE_CARD = "uplink:{unit}"
"""What the ``card`` column of rows that came over the air holds (a card's rows hold its folder)."""
COMMIT_S = 0.5
"""Messages are written (one transaction) and acknowledged in batches this often."""
DEFAULT_HEARTBEAT_S = 60.0
LIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_units (
    unit_id VARCHAR PRIMARY KEY, last_heard_utc TIMESTAMP, status VARCHAR, status_utc TIMESTAMP, messages BIGINT);
CREATE TABLE IF NOT EXISTS live_alerts (
    unit_id VARCHAR, boot_id VARCHAR, label VARCHAR, utc TIMESTAMP, score DOUBLE, p_correct DOUBLE,
    start_sample BIGINT, received_utc TIMESTAMP);
"""


@dataclass(frozen=True)
class UnitLiveness:
    unit_id: str
    last_heard_utc: datetime | None
    status: str
    heartbeat_s: float
    silent: bool
    """Nothing heard for more than the configured number of heartbeats."""


@dataclass
class LiveCounts:
    messages: int = 0
    added: Counter[str] = field(default_factory=Counter)
    rejected: int = 0


def live_client_id(db_path: Path) -> str:
    """One persistent broker session per database: the broker keeps its messages while the desk is away."""
    return "biolingual-desk-" + hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:12]


def contents_of(unit: str, batches: list[Any]) -> tuple[CardContents, int]:
    """The rows of one unit's messages as a card's contents (``card`` = ``uplink:<unit>``); also bad lines."""
    contents = CardContents(LIVE_CARD.format(unit=unit))
    bad = 0
    for batch in batches:
        source = f"{unit}:{batch.segment}"
        if batch.kind == BOOTS_KIND:
            contents.boots.append(batch.manifest or {})
        elif batch.kind in ("detections", "effort"):
            table: Table = getattr(contents, batch.kind)
            header = next(csv.reader([batch.header]), [])
            positions = [header.index(c) if c in header else -1 for c in table.columns]
            for row in csv.reader(batch.lines):
                if len(row) != len(header):
                    bad += 1
                    continue
                table.rows.append([row[p] if p >= 0 else None for p in positions])
                table.files.append(source)
        else:
            records = contents.events if batch.kind == "events" else contents.health
            for line in batch.lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(record, dict):
                    records.append((record, source))
    return contents, bad


class LiveCollector:
    """Subscribes to ``<prefix>/+/…`` and writes what arrives into the collection database."""

    def __init__(self, db_path: Path, settings: LinkSettings, prefix: str = "biolingual",
                 on_line: Callable[[str], None] = print) -> None:
        self.db_path = db_path
        self.settings = settings
        self.prefix = prefix
        self.on_line = on_line
        self.counts = LiveCounts()
        self._inbox: queue.Queue[Any] = queue.Queue()

    def run(self, stop: threading.Event, duration_s: float | None = None) -> LiveCounts:
        """Until ``stop`` is set (or ``duration_s`` passed): connect (re-connecting with back-off), write, ack."""
        con = connect(self.db_path)
        run(con, LIVE_SCHEMA)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        wait = 1.0
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                link = Link(self.settings, on_message=self._inbox.put, manual_ack=True)
                try:
                    link.connect()
                except UplinkError as e:
                    self.on_line(f"broker: {e.message} (retrying in {wait:g} s; {e.hint})")
                    stop.wait(wait)
                    wait = min(wait * 2, 60.0)
                    continue
                wait = 1.0
                link.client.subscribe([(f"{self.prefix}/+/data/#", 1), (f"{self.prefix}/+/status", 1),
                                       (f"{self.prefix}/+/alert", 1)])
                self.on_line(f"listening on {self.settings.where} ({self.prefix}/+/…) -> {self.db_path}")
                while not stop.is_set() and not link.lost.is_set() and (deadline is None or
                                                                        time.monotonic() < deadline):
                    stop.wait(COMMIT_S)
                    self._commit(con, link)
                self._commit(con, link)
                if link.lost.is_set():
                    self.on_line(f"broker: {link.error}; reconnecting")
                link.close()
        finally:
            con.close()
        return self.counts

    def _commit(self, con: duckdb.DuckDBPyConnection, link: Link) -> None:
        messages = []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if not messages:
            return
        self.write(con, messages)
        for message in messages:
            if message.qos:
                link.client.ack(message.mid, message.qos)

    def write(self, con: duckdb.DuckDBPyConnection, messages: list[Any]) -> None:
        """Ingest data messages per unit, record statuses and alerts; one unit's bad message never stops the rest."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        batches: dict[str, list[Any]] = defaultdict(list)
        heard: Counter[str] = Counter()
        for message in messages:
            parts = message.topic.split("/")
            if len(parts) < 3:
                continue
            unit, channel = parts[-2] if parts[-1] in ("status", "alert") else parts[-3], parts[-1]
            self.counts.messages += 1
            if not message.retain:
                heard[unit] += 1
            if channel == "status":
                self._status(con, unit, message.payload, now)
            elif channel == "alert":
                self._alert(con, unit, message.payload, now)
            else:
                try:
                    sender, batch = decode_batch(message.payload)
                except UplinkError as e:
                    self.counts.rejected += 1
                    self.on_line(f"{message.topic}: {e.message}")
                    continue
                batches[sender].append(batch)
        for unit, unit_batches in batches.items():
            contents, bad = contents_of(unit, unit_batches)
            self.counts.rejected += bad
            counts = ingest(con, contents)
            self.counts.added.update(counts.added)
        for unit, n in heard.items():
            run(con, """INSERT INTO live_units VALUES (?, ?, NULL, NULL, ?) ON CONFLICT (unit_id) DO UPDATE
                        SET last_heard_utc = excluded.last_heard_utc, messages = live_units.messages + ?""",
                [unit, now, n, n])

    def _status(self, con: duckdb.DuckDBPyConnection, unit: str, payload: bytes, now: datetime) -> None:
        try:
            state = str(json.loads(payload).get("state", ""))
        except (ValueError, AttributeError):
            state = payload.decode("utf-8", errors="replace")[:40]
        run(con, """INSERT INTO live_units VALUES (?, NULL, ?, ?, 0) ON CONFLICT (unit_id) DO UPDATE
                    SET status = excluded.status, status_utc = excluded.status_utc""", [unit, state, now])
        self.on_line(f"{unit}: {state}")

    def _alert(self, con: duckdb.DuckDBPyConnection, unit: str, payload: bytes, now: datetime) -> None:
        try:
            alert = json.loads(payload)
            row = [unit, alert.get("boot_id"), str(alert["label"]), alert.get("utc"), alert.get("score"),
                   alert.get("p_correct"), alert.get("start_sample"), now]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.counts.rejected += 1
            return
        run(con, "INSERT INTO live_alerts VALUES (?, ?, ?, TRY_CAST(? AS TIMESTAMPTZ) AT TIME ZONE 'UTC', ?, ?, ?, ?)",
            row)
        self.on_line(f"ALERT {unit}: {row[2]} at {row[3]} (score {row[4]})")


def unit_liveness(con: duckdb.DuckDBPyConnection, now: datetime, silent_after: int) -> list[UnitLiveness]:
    """Each unit heard over the air: last heard, status, and silent when quiet for ``silent_after`` heartbeats."""
    tables = {r[0] for r in run(con, "SELECT table_name FROM information_schema.tables")}
    if "live_units" not in tables:
        return []
    rows = run(con, """
        SELECT u.unit_id, u.last_heard_utc, coalesce(u.status, ''),
               (SELECT TRY_CAST(json_extract(b.boot_info, '$.config.health.heartbeat_s') AS DOUBLE) FROM boots b
                WHERE b.unit_id = u.unit_id ORDER BY b.wall_utc_at_boot DESC LIMIT 1)
        FROM live_units u ORDER BY u.unit_id""")
    naive_now = now.astimezone(timezone.utc).replace(tzinfo=None)
    out = []
    for unit, heard, status, heartbeat in rows:
        beat = float(heartbeat or DEFAULT_HEARTBEAT_S)
        silent = heard is None or (naive_now - heard).total_seconds() > silent_after * beat
        out.append(UnitLiveness(unit, heard, status, beat, silent))
    return out
