"""Per-label alert rules: a detection at or above a score or a calibrated probability, with cooldown and quiet hours."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.card.cardformat import format_utc
from edge.config.uplink import AlertRule
from edge.errors import ConfigError
from edge.stream.detector import DetectionEvent

PCorrect = Callable[[float], float]
"""A label's installed confidence fit: score -> P(correct)."""


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class _Rule:
    label: str
    min_score: float | None
    min_p: float | None
    p_correct: PCorrect | None
    cooldown: dt.timedelta
    quiet: tuple[tuple[int, int], ...]
    """(start, end) local minutes of the day; end < start wraps midnight."""

    def quiet_at(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end if start <= end else (minute >= start or minute < end)
                   for start, end in self.quiet)


class AlertRules:
    """Decides, per detection, whether to publish an alert now; remembers each label's last alert (cooldown)."""

    def __init__(self, rules: Sequence[AlertRule], timezone: str = "UTC",
                 confidence: dict[str, PCorrect] | None = None) -> None:
        fits = confidence or {}
        self._tz = zoneinfo.ZoneInfo(timezone)
        self._rules: dict[str, _Rule] = {}
        for rule in rules:
            fit = fits.get(rule.label)
            if rule.min_p is not None and fit is None:
                raise ConfigError(f"uplink alert for '{rule.label}' uses min_p, but the bundle has no confidence fit "
                                  "for that label", "use min_score, or install a fit (`logs fit-confidence "
                                  "--install BUNDLE`)")
            quiet = tuple((_minutes(p.split("-")[0]), _minutes(p.split("-")[1])) for p in rule.quiet_hours)
            self._rules[rule.label.casefold()] = _Rule(rule.label, rule.min_score, rule.min_p, fit,
                                                       dt.timedelta(seconds=rule.cooldown_s), quiet)
        self._last: dict[str, dt.datetime] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def check(self, event: DetectionEvent, utc: dt.datetime) -> dict[str, Any] | None:
        """The alert's fields when ``event`` (starting at ``utc``) passes its label's rule, else None."""
        rule = self._rules.get(event.label.casefold())
        if rule is None:
            return None
        p = None if rule.p_correct is None else float(rule.p_correct(event.peak_score))
        if rule.min_score is not None and event.peak_score < rule.min_score:
            return None
        if rule.min_p is not None and (p is None or p < rule.min_p):
            return None
        if rule.quiet_at(utc.astimezone(self._tz)):
            return None
        last = self._last.get(rule.label)
        if last is not None and abs(utc - last) < rule.cooldown:
            return None
        self._last[rule.label] = utc
        return {"label": event.label, "utc": format_utc(utc), "score": round(event.peak_score, 4),
                "p_correct": None if p is None else round(p, 4), "start_sample": event.start_sample,
                "end_sample": event.end_sample}
