"""What goes over the air: topics and the JSON payloads, shared by the unit (writer) and ``logs live`` (reader)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from edge.errors import EdgeError

PAYLOAD_VERSION = 1
ONLINE, OFFLINE, OFFLINE_UNCLEAN = "online", "offline", "offline-unclean"
"""Retained status values: ``offline-unclean`` is the broker's last will (the unit vanished without a goodbye)."""
BOOTS_KIND = "boots"
DATA_KINDS = (BOOTS_KIND, "effort", "detections", "events", "health")
"""Kinds sent from the card, in the card writer's order within one flush."""


class UplinkError(EdgeError):
    """The uplink cannot be set up, or a message is not one of ours."""


def status_topic(prefix: str, unit: str) -> str:
    return f"{prefix}/{unit}/status"


def alert_topic(prefix: str, unit: str) -> str:
    return f"{prefix}/{unit}/alert"


def data_topic(prefix: str, unit: str, kind: str) -> str:
    return f"{prefix}/{unit}/data/{kind}"


@dataclass(frozen=True)
class Batch:
    """Consecutive complete lines of one card segment, bytes ``[start, end)`` of the file, or a boot manifest.

    ``segment`` is the card-relative path of the sealed name (``detections/2024-05-01_<boot>_000.csv``), the same
    whether the file is still open (``.part``) or sealed, so the cursor survives the rename.
    """

    kind: str
    segment: str
    start: int
    end: int
    lines: list[str] = field(default_factory=list)
    header: str = ""
    """A CSV segment's header line (column names), sent with every batch so each message stands alone."""
    manifest: dict[str, Any] | None = None

    @property
    def rows(self) -> int:
        return len(self.lines) if self.manifest is None else 1


def encode_batch(unit: str, batch: Batch) -> bytes:
    record: dict[str, Any] = {"v": PAYLOAD_VERSION, "unit": unit, "kind": batch.kind, "segment": batch.segment,
                              "start": batch.start, "end": batch.end}
    if batch.manifest is not None:
        record["manifest"] = batch.manifest
    else:
        record["header"] = batch.header
        record["lines"] = batch.lines
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_batch(payload: bytes) -> tuple[str, Batch]:
    """(unit, batch) of a data message; anything else raises :class:`UplinkError` naming what is wrong."""
    try:
        record = json.loads(payload.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        version = record.get("v")
        if version != PAYLOAD_VERSION:
            raise ValueError(f"payload version {version!r}, this reader knows {PAYLOAD_VERSION}")
        kind = str(record["kind"])
        if kind not in DATA_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        manifest = record.get("manifest")
        lines = record.get("lines", [])
        if manifest is None and not (isinstance(lines, list) and all(isinstance(x, str) for x in lines)):
            raise ValueError("lines is not a list of strings")
        batch = Batch(kind, str(record["segment"]), int(record["start"]), int(record["end"]), list(lines),
                      str(record.get("header", "")), manifest if isinstance(manifest, dict) else None)
        return str(record["unit"]), batch
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UplinkError(f"not a biolingual-edge uplink message: {e}",
                          "is another program publishing under this topic prefix?") from e
