"""The SD-card log format: folders, file names, columns, time stamps. Shared by the writer and the collector."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import date, datetime, timedelta, timezone

from edge import durable
from edge.errors import EdgeError

SCHEMA_VERSION = 1
"""Bumped whenever a column or record field changes meaning; older cards are read by column name."""

CLOCK_SYNC_STATES = ("ntp", "gps", "rtc", "unsynchronised")
"""How the unit's clock was set when a record's time was computed, best first."""

BOOTS_DIR = "boots"
DETECTIONS_DIR = "detections"
EFFORT_DIR = "effort"
EVENTS_DIR = "events"
HEALTH_DIR = "health"
CLIPS_DIR = "clips"
OPEN_SUFFIX = ".part"
"""Suffix of the segment being appended to; removed by an atomic rename when the segment is sealed."""
TEMP_PREFIX = durable.TEMP_PREFIX
"""Prefix of files being written whole (manifests, clips) before their atomic rename (by :mod:`edge.durable`)."""

DETECTION_COLUMNS = (
    "utc", "end_utc", "unit_id", "deployment_id", "boot_id", "stream", "clock_sync",
    "label", "score", "cosine", "start_sample", "end_sample", "peak_start_sample", "windows",
)
"""One row per detection event; ``utc``/``end_utc`` are the times of ``start_sample``/``end_sample``."""
EFFORT_COLUMNS = (
    "minute_utc", "unit_id", "deployment_id", "boot_id", "stream", "clock_sync",
    "first_sample", "last_sample", "analysed_s",
)
"""Analysed samples per UTC minute and stream. A minute is one row, or several (distinct ``first_sample``) when
detections were written before it was over: effort always reaches the card in the same batch as, and before,
the detections it covers."""
ENVELOPE_FIELDS = ("utc", "unit_id", "deployment_id", "boot_id", "seq", "stream", "clock_sync", "sample", "kind")
"""Fields every JSON-lines record (events and health) starts with."""

MICROSECONDS_PER_SECOND = 1_000_000
SECONDS_PER_MINUTE = 60
MICROSECONDS_PER_MINUTE = SECONDS_PER_MINUTE * MICROSECONDS_PER_SECOND
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CardLogError(EdgeError):
    """The card log cannot be opened or was called out of order."""


def new_boot_id(now: datetime) -> str:
    """A unique, sortable-by-time id for one start of the daemon, e.g. ``20240501T031500Z-3fa2c1``."""
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def format_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with an explicit offset and millisecond resolution, e.g. ``2024-05-01T03:15:00.123+00:00``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def compact_utc(moment: datetime) -> str:
    """File-name-safe UTC stamp, e.g. ``20240501T031500.123Z``."""
    utc = moment.astimezone(timezone.utc)
    return f"{utc:%Y%m%dT%H%M%S}.{utc.microsecond // 1000:03d}Z"


def epoch_us(moment: datetime) -> int:
    """Integer microseconds since 1970-01-01 UTC (exact; no float seconds)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROSECONDS_PER_SECOND + delta.microseconds


def from_epoch_us(microseconds: int) -> datetime:
    return EPOCH + timedelta(microseconds=microseconds)


def segment_name(day: date, boot_id: str, part: int, extension: str) -> str:
    """Name of a sealed segment: ``2024-05-01_<boot>_000.csv`` (one or more per UTC day and boot)."""
    return f"{day.isoformat()}_{boot_id}_{part:03d}.{extension}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in file names on FAT/exFAT cards."""
    return _UNSAFE.sub("_", text).strip("._") or "_"


NAME_HASH_CHARS = 8
"""Hex characters of sha256 that :func:`unique_name` appends when sanitising a name lost something."""
_HASHED_TAIL = re.compile(rf"-[0-9a-f]{{{NAME_HASH_CHARS},}}$")


def unique_name(display: str, identity: str | None = None, hash_chars: int = 0) -> str:
    """A file or folder name for ``display`` that no other identity gets: :func:`safe_name` of it when that lost
    nothing, else that plus ``-`` and a short sha256 of ``identity`` (default ``display``).

    ``.``, ``..`` and ``_`` get ``_-<hash>``, ``_-<other hash>`` and ``_``; ``a/b`` and ``a_b`` get ``a_b-<hash>``
    and ``a_b``. A clean name that ends like a hash (``x-0123abcd``) is hashed too, so a clean name never equals a
    hashed one. ``hash_chars`` > 0: always hash, with that many characters (a caller's clash on a case-insensitive
    disk). Identities the same up to case need that caller (label lists refuse such duplicates).
    """
    base = safe_name(display)
    if not hash_chars and base == display and not _HASHED_TAIL.search(base):
        return base
    digest = hashlib.sha256((display if identity is None else identity).encode("utf-8")).hexdigest()
    return f"{base}-{digest[:hash_chars or NAME_HASH_CHARS]}"
