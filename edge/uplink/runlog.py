"""The card log with an uplink beside it: every call goes to the card first; the uplink only hears about it.

Alerts are handed over at once (before the rows reach the broker in their batch); the uplink's own events
(connected, lost, failed) are written to the card by the daemon's thread at the next flush, so the card log
keeps a single writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge.card.cardlog import CardLog
from edge.stream.detector import DetectionEvent
from edge.uplink.alerts import AlertRules
from edge.uplink.service import Uplink

STOP_DRAIN_S = 5.0
"""At stop, the uplink keeps sending what is on the card for this long (the rest waits on the card)."""


class UplinkLog:
    """A :class:`~edge.card.RunLog` that is the card log, plus the uplink thread fed from it."""

    def __init__(self, card: CardLog, uplink: Uplink, rules: AlertRules | None = None,
                 stop_drain_s: float = STOP_DRAIN_S) -> None:
        self.card = card
        self.uplink = uplink
        self.rules = rules
        self.stop_drain_s = stop_drain_s
        uplink.start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.card, name)

    def detections(self, events: Sequence[DetectionEvent]) -> None:
        self.card.detections(events)
        if not self.rules:
            return
        for event in events:
            utc = self.card.utc_of(event.start_sample)
            fields = None if utc is None else self.rules.check(event, utc)
            if fields is not None:
                self.uplink.alert({"boot_id": self.card.boot_id, **fields})

    def flush(self, *, final: bool = False) -> None:
        self._write_uplink_events()
        self.card.flush(final=final)
        self.uplink.wake()

    def close(self) -> None:
        self._write_uplink_events()
        self.card.close()
        self.uplink.stop(self.stop_drain_s)

    def _write_uplink_events(self) -> None:
        for kind, fields in self.uplink.take_events():
            self.card.event(kind, **fields)
