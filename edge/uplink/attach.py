"""Wiring: a unit config's ``uplink:`` section -> the card log with an uplink beside it (or the card log alone)."""

from __future__ import annotations

import logging
from functools import partial

from edge.card import RunLog
from edge.card.cardlog import CardLog
from edge.config.schema import UnitConfig
from edge.scoring.confidence import Confidence, LabelConfidence
from edge.uplink.alerts import AlertRules, PCorrect
from edge.uplink.link import INSTALL_HINT, paho_available
from edge.uplink.messages import UplinkError
from edge.uplink.runlog import UplinkLog
from edge.uplink.service import Uplink

log = logging.getLogger(__name__)


def with_uplink(config: UnitConfig, card: CardLog, confidence: Confidence | None = None) -> RunLog:
    """The card log, with the configured uplink attached; a uplink that cannot start is an event, never fatal."""
    section = config.uplink
    if not section.enabled:
        return card
    if not paho_available():
        log.warning("uplink configured but paho-mqtt is not installed; running without it (%s)", INSTALL_HINT)
        card.event("uplink_unavailable", reason="paho-mqtt is not installed", hint=INSTALL_HINT)
        return card
    fits: dict[str, PCorrect] = {} if confidence is None else {
        name: partial(_p_correct, fit) for name, fit in confidence.labels.items()}
    rules = AlertRules(section.alerts, config.schedule.timezone, fits)
    try:
        uplink = Uplink(card.root, section, card.unit.unit_id, card.unit.deployment_id, card.boot_id,
                        card.durable_segments)
    except UplinkError as e:
        log.warning("uplink not started: %s (%s)", e.message, e.hint)
        card.event("uplink_failed", error=e.message, hint=e.hint)
        return card
    return UplinkLog(card, uplink, rules)


def _p_correct(fit: LabelConfidence, score: float) -> float:
    return float(fit.p_correct(score))
