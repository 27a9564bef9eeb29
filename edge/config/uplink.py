"""The ``uplink:`` section of a unit config: an MQTT broker the unit sends its card log to (off by default)."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge.config.base import LoosePath, StrictModel, raise_problems, resolve_path

MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}
"""Default broker port per URL scheme (``mqtts``: TLS)."""
Sendable = Literal["detections", "effort", "events", "health"]
SENDABLE: tuple[Sendable, ...] = ("detections", "effort", "events", "health")
"""Card-log kinds the uplink can send (boot manifests always go with them)."""
HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
TOPIC_PREFIX = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"


class AlertRule(StrictModel):
    """Publish an alert at once when ``label`` is detected at or above a score or a calibrated probability."""

    label: str
    min_score: float | None = None
    """Score (the detector's units: cosine × logit scale) the detection's peak must reach."""
    min_p: Annotated[float, Field(gt=0, lt=1)] | None = None
    """P(correct) from the bundle's installed confidence fit (``logs fit-confidence --install``)."""
    cooldown_s: Annotated[float, Field(ge=0)] = 600.0
    """After an alert for this label, further ones wait this long (seconds)."""
    quiet_hours: list[str] = []
    """Local "HH:MM-HH:MM" periods (``schedule.timezone``) without alerts; may wrap midnight."""

    @field_validator("quiet_hours")
    @classmethod
    def _periods(cls, value: list[str]) -> list[str]:
        for period in value:
            parts = period.split("-")
            if len(parts) != 2 or not all(HH_MM.match(p.strip()) for p in parts):
                raise ValueError(f"'{period}' is not a local period \"HH:MM-HH:MM\" (quoted in YAML)")
        return value

    @model_validator(mode="after")
    def _one_threshold(self) -> AlertRule:
        if (self.min_score is None) == (self.min_p is None):
            raise_problems([("min_score", "give exactly one of min_score or min_p")])
        return self


class UplinkSection(StrictModel):
    """Store-and-forward over MQTT: the card is the outbox; what the broker acknowledged is kept on the card."""

    url: str = ""
    """Broker, ``mqtt://host:1883`` or ``mqtts://host:8883`` (TLS); empty: no uplink (the default)."""
    credentials_file: LoosePath | None = None
    """File with one line ``username:password``, readable only by the service user (mode 600)."""
    ca_file: LoosePath | None = None
    """CA certificate (PEM) the broker's certificate must chain to (mqtts); None: the system's CAs."""
    client_cert: LoosePath | None = None
    client_key: LoosePath | None = None
    """Client certificate and key (PEM) for brokers that require one."""
    topic_prefix: Annotated[str, Field(pattern=TOPIC_PREFIX)] = "biolingual"
    """Topics are ``<prefix>/<unit_id>/status|alert|data/<kind>``."""
    send: list[Sendable] = list(SENDABLE)
    """Card-log kinds to send."""
    max_rows_per_s: Annotated[float, Field(gt=0)] = 200.0
    """Backlog drain rate (rows a second, oldest first); alerts and status are never held back by it."""
    rows_per_message: Annotated[int, Field(ge=1, le=5000)] = 200
    max_inflight: Annotated[int, Field(ge=1, le=100)] = 8
    """Messages sent but not yet acknowledged by the broker."""
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60
    backoff_max_s: Annotated[float, Field(gt=0)] = 300.0
    """Reconnection waits double from 1 s up to this."""
    alerts: list[AlertRule] = []

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in MQTT_PORTS or not parts.hostname:
            raise ValueError(f"'{value}' is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL (it is written to the boot record); "
                             "use uplink.credentials_file")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as e:
            raise ValueError(f"'{value}': {e}") from e
        return value

    @field_validator("credentials_file", "ca_file", "client_cert", "client_key")
    @classmethod
    def _resolve(cls, value: object, info: ValidationInfo) -> object:
        return value if value is None else resolve_path(value, info)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _consistent(self) -> UplinkSection:
        problems = []
        if (self.client_cert is None) != (self.client_key is None):
            problems.append(("client_key", "client_cert and client_key go together"))
        if self.url and urlsplit(self.url).scheme == "mqtt" and (self.ca_file or self.client_cert):
            problems.append(("url", "a CA file or client certificate needs mqtts:// (TLS)"))
        labels = [rule.label.casefold() for rule in self.alerts]
        problems += [(f"alerts.{i}.label", f"'{rule.label}' has two rules")
                     for i, rule in enumerate(self.alerts) if labels.index(rule.label.casefold()) != i]
        raise_problems(problems)
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or MQTT_PORTS[parts.scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"
