"""The uplink thread: connect with capped back-off, send the card's durable rows oldest first at a set rate,
move the cursor only on the broker's acknowledgement, publish alerts at once, and keep a retained status.

The daemon's threads never wait on it: they hand over alerts and a wake-up, and collect its events (which go
on the card through the daemon's own writes, so the card log keeps one writer).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config.uplink import UplinkSection
from edge.uplink.link import CONNECT_TIMEOUT_S, Link, LinkSettings, link_settings
from edge.uplink.messages import (
    OFFLINE,
    OFFLINE_UNCLEAN,
    ONLINE,
    Batch,
    UplinkError,
    alert_topic,
    data_topic,
    encode_batch,
    status_topic,
)
from edge.uplink.outbox import CardOutbox, Cursor, Durable

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0
"""With nothing to send, look at the card again this often (a flush of the card log wakes the thread sooner)."""
CURSOR_SAVE_S = 5.0
"""The cursor is written to the card at most this often (and at stop): a crash re-sends at most this much."""
FIRST_BACKOFF_S = 1.0
MAX_PENDING_ALERTS = 100
GOODBYE_ACK_S = 2.0


def _status(state: str, **fields: Any) -> bytes:
    return json.dumps({"state": state, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields},
                      separators=(",", ":")).encode("utf-8")


@dataclass
class _Inflight:
    mid: int
    batch: Batch | None
    """None: an alert (not part of the cursor)."""
    alert: bytes = b""


@dataclass
class UplinkStats:
    """What the uplink did (for ``check``, tests and benchmarks)."""

    connected: bool = False
    connects: int = 0
    failures: int = 0
    messages: int = 0
    rows_sent: int = 0
    rows_acked: int = 0
    alerts_sent: int = 0
    last_error: str = ""
    backoff: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    """The latest waits between connection attempts (seconds)."""


class Uplink:
    """Store-and-forward of one card to one broker, in a thread of its own."""

    def __init__(self, root: Path, section: UplinkSection, unit_id: str, deployment_id: str = "",
                 boot_id: str = "", durable: Durable | None = None, *, settings: LinkSettings | None = None,
                 link_factory: Callable[..., Link] = Link) -> None:
        self.root = Path(root)
        self.section = section
        self.unit_id = unit_id
        self.prefix = section.topic_prefix
        status = status_topic(self.prefix, unit_id)
        self.settings = settings or link_settings(section, f"biolingual-unit-{unit_id}",
                                                  will=(status, _status(OFFLINE_UNCLEAN, unit_id=unit_id)))
        self.cursor = Cursor(self.root)
        self.outbox = CardOutbox(self.root, section.send, boot_id, durable)
        self.stats = UplinkStats()
        self._deployment = deployment_id
        self._link_factory = link_factory
        self._events: deque[tuple[str, dict[str, Any]]] = deque()
        self._alerts: deque[bytes] = deque(maxlen=MAX_PENDING_ALERTS)
        self._acked: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        if self.cursor.problem:
            self._event("uplink_cursor_reset", problem=self.cursor.problem)

    # -- what the daemon calls (never blocks) ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New rows may be durable on the card."""
        self._wake.set()

    def alert(self, fields: dict[str, Any]) -> None:
        payload = json.dumps({"unit_id": self.unit_id, "deployment_id": self._deployment, **fields},
                             separators=(",", ":"), default=str).encode("utf-8")
        self._alerts.append(payload)
        self._wake.set()

    def take_events(self) -> list[tuple[str, dict[str, Any]]]:
        """Events for the card log since the last call (connection lost/restored, failures)."""
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    def stop(self, drain_s: float = 5.0) -> None:
        """Send what is durable for up to ``drain_s``, say ``offline`` (retained), save the cursor, end the thread."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(drain_s + GOODBYE_ACK_S + 5.0)
        self._save_cursor()

    # -- the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        first_wait = min(FIRST_BACKOFF_S, self.section.backoff_max_s)
        wait = first_wait
        down_since: float | None = None
        last_error = ""
        final_try = False
        while not self._stop.is_set() or not final_try:
            if self._stop.is_set():
                # stopping while waiting out a back-off: one last try within the drain budget, then leave
                final_try = True
                if time.monotonic() >= self._drain_until:
                    break
            try:
                link = self._link_factory(self.settings, on_ack=self._on_ack)
                link.connect(CONNECT_TIMEOUT_S if not final_try else max(0.5, self._drain_until - time.monotonic()))
            except UplinkError as e:
                self.stats.failures += 1
                self.stats.last_error = e.message
                down_since = down_since or time.monotonic()
                delay = wait * random.uniform(0.5, 1.0)  # fifty units must not all come back in the same second
                self.stats.backoff.append(round(delay, 3))
                if e.message != last_error:
                    log.warning("uplink: %s (%s); retrying with back-off up to %g s", e.message, e.hint,
                                self.section.backoff_max_s)
                    self._event("uplink_failed", error=e.message, hint=e.hint, broker=self.settings.where)
                last_error = e.message
                self._stop.wait(delay)
                wait = min(wait * 2, self.section.backoff_max_s)
                continue
            except Exception as e:  # a bug in the uplink must never take the recorder down
                log.exception("uplink: unexpected error")
                self._event("uplink_failed", error=f"{type(e).__name__}: {e}", broker=self.settings.where)
                self._stop.wait(self.section.backoff_max_s)
                continue
            self.stats.connects += 1
            self.stats.connected = True
            self._event("uplink_connected", broker=self.settings.where, attempts=self.stats.failures,
                        down_s=None if down_since is None else round(time.monotonic() - down_since, 1))
            wait, down_since, last_error = first_wait, None, ""
            try:
                self._serve(link)
            except Exception as e:  # noqa: BLE001  (same reason as above)
                log.exception("uplink: unexpected error while sending")
                link.error = link.error or f"{type(e).__name__}: {e}"
            self.stats.connected = False
            if self._stop.is_set():
                if link.lost.is_set():
                    link.close()
                break
            self.stats.last_error = link.error
            self._event("uplink_lost", error=link.error, broker=self.settings.where)
            down_since = time.monotonic()
            link.close()
            self._save_cursor()
            self._stop.wait(first_wait)  # never a tight reconnect loop, whatever dropped the connection

    def _serve(self, link: Link) -> None:
        """Send until the connection drops or the daemon stops; the cursor follows the broker's acks."""
        status = status_topic(self.prefix, self.unit_id)
        inflight: deque[_Inflight] = deque()
        with self._lock:
            self._acked.clear()  # message ids start again with each connection
        link.publish(status, _status(ONLINE, unit_id=self.unit_id, deployment_id=self._deployment), retain=True)
        position = dict(self.cursor.acked)
        self.outbox.forget_acked(self.cursor.acked)
        rate, burst = self.section.max_rows_per_s, max(self.section.rows_per_message, self.section.max_rows_per_s)
        tokens, last_tick, last_save = burst, time.monotonic(), time.monotonic()
        while not link.lost.is_set():
            now = time.monotonic()
            tokens = min(burst, tokens + (now - last_tick) * rate)
            last_tick = now
            self._settle_acks(inflight)
            if self.cursor.dirty and now - last_save >= CURSOR_SAVE_S:
                self._save_cursor()
                last_save = now
            while self._alerts:  # alerts first, never rate-limited
                payload = self._alerts.popleft()
                inflight.append(_Inflight(link.publish(alert_topic(self.prefix, self.unit_id), payload), None,
                                          payload))
                self.stats.alerts_sent += 1
            stopping = self._stop.is_set()
            if stopping and now >= self._drain_until:
                break
            sent = False
            if len(inflight) < self.section.max_inflight and (stopping or tokens >= 1):
                rows = self.section.rows_per_message if stopping else min(self.section.rows_per_message, int(tokens))
                batch = self._send_next(link, inflight, position, rows)
                sent = batch is not None
                tokens -= 0 if batch is None or stopping else batch.rows
            if stopping and not sent and not inflight:
                break
            if not sent:
                self._wake.wait(IDLE_POLL_S if tokens >= 1 or stopping else max(0.01, (1 - tokens) / rate))
                self._wake.clear()
        if link.lost.is_set():
            self._requeue_alerts(inflight)
            return
        self._settle_acks(inflight)
        self._goodbye(link, status)

    def _send_next(self, link: Link, inflight: deque[_Inflight], position: dict[str, int],
                   max_rows: int) -> Batch | None:
        batch = self.outbox.next_batch(position, max_rows)
        if batch is None:
            return None
        mid = link.publish(data_topic(self.prefix, self.unit_id, batch.kind), encode_batch(self.unit_id, batch))
        inflight.append(_Inflight(mid, batch))
        position[batch.segment] = batch.end
        self.stats.messages += 1
        self.stats.rows_sent += batch.rows
        return batch

    def _settle_acks(self, inflight: deque[_Inflight]) -> None:
        """Advance the cursor over the acknowledged messages at the front (in publish order, never past a gap)."""
        with self._lock:
            while inflight and inflight[0].mid in self._acked:
                item = inflight.popleft()
                self._acked.discard(item.mid)
                if item.batch is not None:
                    self.cursor.advance(item.batch.segment, item.batch.end)
                    self.outbox.mark_done(item.batch.segment, item.batch.end)
                    self.stats.rows_acked += item.batch.rows
            # an ack whose message is not in flight (the status message) is dropped here, so that a message id
            # reused after 65535 publishes can never find a stale ack and move the cursor over unsent rows
            self._acked &= {item.mid for item in inflight}

    def _requeue_alerts(self, inflight: deque[_Inflight]) -> None:
        for item in reversed(inflight):
            if item.batch is None:
                self._alerts.appendleft(item.alert)

    def _goodbye(self, link: Link, status: str) -> None:
        mid = link.publish(status, _status(OFFLINE, unit_id=self.unit_id), retain=True)
        deadline = time.monotonic() + GOODBYE_ACK_S
        while mid not in self._acked and time.monotonic() < deadline and not link.lost.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
        link.close()

    def _on_ack(self, mid: int) -> None:
        with self._lock:
            self._acked.add(mid)
        self._wake.set()

    def _save_cursor(self) -> None:
        try:
            self.cursor.save()
        except OSError as e:
            self._event("uplink_cursor_unsaved", error=str(e))

    def _event(self, kind: str, **fields: Any) -> None:
        self._events.append((kind, fields))
