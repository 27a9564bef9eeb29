"""The SD-card log of one daemon run ("boot"): detections, effort, events, health, manifest and clips.

Every record names the unit, deployment, boot, the sample it came from, its UTC time and the clock-sync state.
Rows are buffered in memory and written with one fsync per :meth:`CardLog.flush`. Writing never raises: when
the card is full the rows wait in a bounded queue, a ``disk_full`` event is recorded, and writing resumes (with
a ``disk_space_returned`` event describing the gap) as soon as space comes back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edge import durable
from edge.card.cardformat import (
    BOOTS_DIR,
    CLIPS_DIR,
    CLOCK_SYNC_STATES,
    DETECTION_COLUMNS,
    DETECTIONS_DIR,
    EFFORT_COLUMNS,
    EFFORT_DIR,
    ENVELOPE_FIELDS,
    EVENTS_DIR,
    HEALTH_DIR,
    SCHEMA_VERSION,
    TEMP_PREFIX,
    CardLogError,
    epoch_us,
    format_utc,
    new_boot_id,
)
from edge.card.clips import ClipContext, remove_stale_temp_files, write_clip
from edge.card.effort import EffortCounter
from edge.card.embeddings import CardEmbeddings, EmbeddingSpec
from edge.card.governor import StorageGovernor, StoragePolicy
from edge.card.reserve import FALLBACK_SUFFIX, ReservedSpace, spill
from edge.card.segments import SegmentStream, csv_line, json_line
from edge.card.streamclock import StreamClock
from edge.stream.detector import DetectionEvent

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SETTINGS_HASH_CHARS = 16
SETTLE_RETRY_S = 0.5
"""At stop, a full card is retried this often until the stop budget is spent."""
COVERED_BY_EFFORT = ("detections",)
"""Kinds whose rows lie in analysed time: written in the same batch as, and after, the effort that covers them."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def settings_hash(boot_info: dict[str, Any]) -> str:
    """Short sha256 of the canonical JSON of the boot settings: equal hashes mean equal settings."""
    canonical = json.dumps(boot_info, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:SETTINGS_HASH_CHARS]


class LowSpace(OSError):
    """Free space is below the configured floor: rows other than health wait in memory."""


@dataclass(frozen=True)
class UnitIdentity:
    """Who wrote the log: the recorder's unique id and the deployment (site/season) it belongs to."""

    unit_id: str
    deployment_id: str

    def __post_init__(self) -> None:
        for name, value in (("unit_id", self.unit_id), ("deployment_id", self.deployment_id)):
            if not value or not value.isprintable():
                raise CardLogError(f"{name} {value!r} is empty or has control characters",
                                   "set a short printable id in the unit's configuration")


@dataclass(frozen=True)
class WriteFailure:
    """When writing started to fail, for the gap record written once it works again."""

    since: datetime
    since_sample: int | None
    errno: int | None
    dropped_before: dict[str, int]


class CardLog:
    """Append-only, power-loss-safe log of one boot on the card at ``root``."""

    def __init__(self, root: Path, unit: UnitIdentity, sample_rate: int, boot_info: dict[str, Any],
                 storage: StoragePolicy | None = None, *, boot_id: str | None = None,
                 wall_clock: Callable[[], datetime] = utc_now, embeddings: EmbeddingSpec | None = None,
                 source: Path | None = None) -> None:
        """``source``: the recording streamed instead of a microphone (``run --input``). Its windows name it (the
        desk cuts their audio from it) and heartbeats are stamped with the stream's time, the recording's, so
        health, uptime and effort share one time base."""
        self.root = Path(root)
        self.source = source
        self.unit = unit
        self.sample_rate = sample_rate
        self.policy = storage or StoragePolicy()
        self._wall_clock = wall_clock
        try:
            durable.make_dirs(self.root)
        except OSError as e:
            raise CardLogError(f"cannot create the card log folder {self.root}: {e.strerror}",
                               "check that the SD card is mounted and writable") from e
        self.boot_id = boot_id or new_boot_id(wall_clock())
        self.settings_hash = settings_hash(boot_info)
        self._manifest: dict[str, Any] | None = self._manifest_record(boot_info)
        limit = self.policy.max_pending_records
        # Write order of one batch: effort first, then the rows it covers, then events and health.
        self._kinds = {
            "effort": SegmentStream(self.root / EFFORT_DIR, self.boot_id, "csv", csv_line(EFFORT_COLUMNS), limit),
            "detections": SegmentStream(self.root / DETECTIONS_DIR, self.boot_id, "csv",
                                        csv_line(DETECTION_COLUMNS), limit),
            "events": SegmentStream(self.root / EVENTS_DIR, self.boot_id, "jsonl", b"", limit),
            "health": SegmentStream(self.root / HEALTH_DIR, self.boot_id, "jsonl", b"", limit),
        }
        self._embeddings = None if embeddings is None else CardEmbeddings(
            self.root, unit.unit_id, unit.deployment_id, self.boot_id, sample_rate, embeddings, source)
        if self._embeddings is not None:
            self._kinds["embeddings"] = self._embeddings.stream  # last: written after the records it ranks below
        self._effort = EffortCounter()
        self._clock: StreamClock | None = None
        self._seq = 0
        self._last_sample: int | None = None
        self._failure: WriteFailure | None = None
        self._last_error: OSError | None = None
        self._lost = 0
        self._closed = False
        self.governor = StorageGovernor(self.root, self.root / CLIPS_DIR, self.policy, self.event)
        stale = (remove_stale_temp_files(self.root / CLIPS_DIR, f"*/{TEMP_PREFIX}*")
                 + remove_stale_temp_files(self.root / BOOTS_DIR, f"{TEMP_PREFIX}*"))
        if stale:
            self.event("stale_temp_files_removed", count=stale)
        self.flush()
        self._reserve = ReservedSpace(self.root, self.policy.reserve_bytes)
        if self.policy.reserve_bytes and not self._reserve.claim():
            self.event("reserve_unavailable", bytes=self.policy.reserve_bytes)

    # -- what the daemon calls -------------------------------------------------------------------------------

    def open_stream(self, anchor_utc: datetime, anchor_sample: int, clock_sync: str) -> None:
        """The audio stream (re)opened: sample ``anchor_sample`` was captured at ``anchor_utc`` (timezone-aware)."""
        if clock_sync not in CLOCK_SYNC_STATES:
            raise CardLogError(f"clock_sync {clock_sync!r} is not one of {', '.join(CLOCK_SYNC_STATES)}",
                               "report how the clock was set: ntp, gps, rtc or unsynchronised")
        if anchor_utc.tzinfo is None:
            raise CardLogError("open_stream got a naive datetime", "pass datetime.now(timezone.utc)")
        previous = self._clock
        self._clock = StreamClock(1 if previous is None else previous.stream + 1, epoch_us(anchor_utc),
                                  anchor_sample, self.sample_rate, clock_sync)
        fields: dict[str, Any] = {"anchor_utc": format_utc(anchor_utc), "anchor_sample": anchor_sample}
        if previous is not None:
            fields["previous_clock_sync"] = previous.clock_sync
            fields["utc_by_previous_anchor"] = format_utc(previous.utc(anchor_sample))
        self.event("stream_open", sample=anchor_sample, **fields)
        if previous is not None and previous.clock_sync != clock_sync:
            self.event("clock_change", sample=anchor_sample, **fields)

    def detections(self, events: Sequence[DetectionEvent]) -> None:
        """Queue one CSV row per detection event (written at the next :meth:`flush`)."""
        clock = self._require_clock()
        stream = self._kinds["detections"]
        unit = self.unit
        for event in events:
            start = clock.utc(event.start_sample)
            stream.add(start.date(), csv_line((
                format_utc(start), format_utc(clock.utc(event.end_sample)), unit.unit_id, unit.deployment_id,
                self.boot_id, clock.stream, clock.clock_sync, event.label, f"{event.peak_score:.6g}",
                f"{event.peak_cosine:.6g}", event.start_sample, event.end_sample, event.peak_start_sample,
                event.windows)))
            self._last_sample = max(self._last_sample or event.end_sample, event.end_sample)

    def effort(self, start_sample: int, end_sample: int) -> None:
        """Samples ``[start_sample, end_sample)`` were analysed (overlapping spans are counted once)."""
        self._effort.add(self._require_clock(), start_sample, end_sample)
        self._last_sample = max(self._last_sample or end_sample, end_sample)

    def embeddings(self, starts: Sequence[int], ends: Sequence[int], vectors: np.ndarray) -> None:
        """Queue each window's embedding ``(B, D)`` (``storage.embeddings``); paused while the card runs low."""
        clock = self._require_clock()
        if self._embeddings is not None and self.governor.allow_embeddings():
            self._embeddings.add(clock, list(starts), list(ends), vectors)

    def event(self, kind: str, sample: int | None = None, **fields: Any) -> None:
        """Queue a lifecycle event (start, stop, xrun, gap, degraded, ...); ``fields`` must be JSON-friendly."""
        self._add_record("events", kind, sample, fields)

    def health(self, fields: dict[str, Any]) -> None:
        """Queue a heartbeat; free card space, pending rows and clip state are added, and clips thinned if due."""
        auto: dict[str, Any] = {"pending_records": self.pending_records, "clips_paused": self.governor.clips_paused}
        try:
            auto["disk_free_bytes"] = self.governor.check()
            auto["disk_total_bytes"] = shutil.disk_usage(self.root).total
        except OSError as e:
            auto["disk_error"] = str(e)
        # A unit's heartbeat is stamped with the wall clock: during an outage no new sample exists to time it by.
        # A recording's stream has no outages and its own time (a --fast run is hours of audio in minutes).
        clock = self._clock
        moment = self._wall_clock()
        if self.source is not None and clock is not None:
            moment = clock.utc(clock.anchor_sample if self._last_sample is None else self._last_sample)
        self._add_record("health", "health", self._last_sample, {**auto, **fields}, moment=moment)

    def save_clip(self, event: DetectionEvent, audio: np.ndarray | Sequence[np.ndarray], audio_start_sample: int,
                  cut_samples: int = 0) -> Path | None:
        """Save ``audio`` ((N,) int16 PCM or float32 at the model rate, pre/post-roll included; or such pieces in
        order, written one by one) with GUANO metadata.

        ``cut_samples``: how much of the requested start was no longer in memory (said in the metadata).
        Returns the clip's path, or ``None`` when the storage governor says no or the write failed.
        """
        clock = self._require_clock()
        try:
            if not self.governor.allow_clip_at(clock.utc(event.start_sample)):
                return None
            context = ClipContext(self.unit.unit_id, self.unit.deployment_id, self.boot_id, clock.clock_sync,
                                  self.sample_rate, self.settings_hash, self.policy.clip_format)
            path = write_clip(self.root / CLIPS_DIR, context, event, audio, audio_start_sample,
                              clock.utc(audio_start_sample), cut_samples)
            self.governor.clip_saved(path.stat().st_size)
            return path
        except OSError as e:
            self.event("clip_failed", sample=event.start_sample, label=event.label, errno=e.errno, error=str(e))
            return None

    def utc_of(self, sample: int) -> datetime | None:
        """Wall-clock time of ``sample`` on the open stream (None before the first ``open_stream``)."""
        return None if self._clock is None else self._clock.utc(sample)

    def durable_segments(self) -> dict[str, int]:
        """Per open segment of this boot (``kind/<sealed name>``), the bytes fsync'd so far.

        Safe to call from another thread (the uplink): a stale answer is only ever smaller than the truth.
        """
        sizes = {}
        for stream in self._kinds.values():
            segment = stream.open_segment
            if segment is not None:
                sizes[f"{stream.folder.name}/{segment.final_path.name}"] = segment.size
        return sizes

    def flush(self, *, final: bool = False) -> None:
        """Write and fsync everything queued; on failure keep it queued and record the failure (never raises).

        Effort rows are written per finished minute; ``final``, or detections waiting to be written, also write
        the minute still filling, so no detection reaches the card before the effort that covers it.
        """
        self._write_manifest()
        stream = self._kinds["effort"]
        covered_pending = any(self._kinds[kind].pending.lines for kind in COVERED_BY_EFFORT)
        for row in self._effort.take_rows(final or covered_pending):
            stream.add(date.fromisoformat(row.minute_utc[:10]), csv_line((
                row.minute_utc, self.unit.unit_id, self.unit.deployment_id, self.boot_id, row.stream,
                row.clock_sync, row.first_sample, row.last_sample, f"{row.analysed_s:.3f}")))
        failure = self._write_all(final)
        if failure is not None:
            self._on_write_failure(failure)
        elif self._failure is not None:
            self._on_write_recovered(self._failure)

    def settle(self, budget_s: float, retry_s: float = SETTLE_RETRY_S) -> dict[str, int]:
        """At stop: write everything, retrying for up to ``budget_s``, then into the reserved space if still full.

        Returns the rows of each kind not on the card (still in memory, or dropped while it was full); the ones
        in memory go to the fallback file at :meth:`close`.
        """
        deadline = time.monotonic() + budget_s
        self.flush(final=True)
        while self.pending_records and time.monotonic() < deadline:
            time.sleep(min(retry_s, max(0.0, deadline - time.monotonic())))
            self.flush(final=True)
        if self.pending_records and self._reserve.release():
            self.event("reserve_released", sample=self._last_sample, bytes=self.policy.reserve_bytes)
            self.flush(final=True)
        return self.rows_not_on_card()

    def rows_not_on_card(self) -> dict[str, int]:
        """Per kind: rows dropped from the full-card queue plus rows still waiting in memory."""
        return {k: s.pending.dropped + len(s.pending.lines) for k, s in self._kinds.items()}

    def fallback_file(self) -> Path | None:
        """Where rows that never reached the card are kept (None: no fallback folder configured)."""
        folder = self.policy.fallback_dir
        return None if folder is None else folder / f"{self.boot_id}{FALLBACK_SUFFIX}"

    def last_write_error(self) -> OSError | None:
        """The last error a card write gave in this run, even if writing recovered since (None: none failed)."""
        return self._last_error

    def rows_lost(self) -> int:
        """Rows neither on the card nor in the fallback file (dropped while the card was full, or unspillable);
        final after :meth:`close`."""
        return self._lost

    def close(self) -> None:
        """Record ``log_close``, flush, spill what the card cannot take, and seal the open segments."""
        if self._closed:
            return
        self.event("log_close", sample=self._last_sample)
        self.flush(final=True)
        self._closed = True
        self._spill_pending()
        for stream in self._kinds.values():
            try:
                stream.seal()
            except OSError as e:
                log.warning("could not seal %s segment: %s", stream.folder.name, e)

    def __enter__(self) -> CardLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------

    @property
    def pending_records(self) -> int:
        """Rows queued in memory, not yet on the card."""
        return sum(len(s.pending.lines) for s in self._kinds.values())

    def _require_clock(self) -> StreamClock:
        if self._closed:
            raise CardLogError("the card log is closed", "create a new CardLog for a new run")
        if self._clock is None:
            raise CardLogError("detections or effort logged before open_stream()",
                               "call open_stream(anchor_utc, anchor_sample, clock_sync) when the audio stream opens")
        return self._clock

    def _add_record(self, kind: str, name: str, sample: int | None, fields: dict[str, Any],
                    moment: datetime | None = None) -> None:
        clock = self._clock
        if moment is None:
            moment = clock.utc(sample) if clock is not None and sample is not None else self._wall_clock()
        self._seq += 1
        envelope = dict(zip(ENVELOPE_FIELDS, (
            format_utc(moment), self.unit.unit_id, self.unit.deployment_id, self.boot_id, self._seq,
            clock.stream if clock else None, clock.clock_sync if clock else "unsynchronised", sample, name)))
        # Envelope fields win; a caller's field of the same name is kept under a prefixed key.
        record = {**envelope, **{(f"field_{k}" if k in envelope else k): v for k, v in fields.items()}}
        self._kinds[kind].add(moment.date(), json_line(record))

    def _manifest_record(self, boot_info: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "unit_id": self.unit.unit_id,
            "deployment_id": self.unit.deployment_id,
            "boot_id": self.boot_id,
            "sample_rate": self.sample_rate,
            "wall_utc_at_boot": format_utc(self._wall_clock()),
            "settings_hash": self.settings_hash,
            "writer": {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()},
            "boot_info": boot_info,
        }

    def _write_manifest(self) -> None:
        if self._manifest is None:
            return
        folder = self.root / BOOTS_DIR
        try:
            durable.make_dirs(folder)
            durable.atomic_write(folder / f"{self.boot_id}.json",
                                 json.dumps(self._manifest, indent=2, sort_keys=True, default=str).encode("utf-8"))
        except OSError as e:
            self._on_write_failure(e)
            return
        self._manifest = None

    def _write_all(self, final: bool = False) -> OSError | None:
        """The one batch write: every kind in order, each fsync'd; covered rows wait while effort cannot be written.

        Below ``min_free_bytes`` only health is written (the rest waits in memory), except in the final flush.
        """
        failure: OSError | None = None
        low = not final and self._below_min_free()
        for kind, stream in self._kinds.items():
            if kind in COVERED_BY_EFFORT and self._kinds["effort"].pending.lines:
                continue
            if low and kind != "health":
                if stream.pending.lines:
                    failure = failure or LowSpace(errno.ENOSPC, "free space below storage.governor.min_free_mb")
                continue
            try:
                stream.write_pending()
            except OSError as e:
                failure = failure or e
        return failure

    def _spill_pending(self) -> None:
        """Rows the card could not take go to the fallback folder (logged); without one they are lost (counted)."""
        self._lost = sum(s.pending.dropped for s in self._kinds.values())
        rows = [(kind, day, line) for kind, s in self._kinds.items() for day, line in s.pending.lines]
        if not rows:
            return
        binary = {"embeddings": self._embeddings.stream.header} if self._embeddings is not None else {}
        path, spilled = (spill(self.policy.fallback_dir, self.boot_id, rows, binary) if self.policy.fallback_dir
                         else (None, 0))
        for stream in self._kinds.values():
            stream.pending.lines.clear()
        self._lost += len(rows) - spilled
        if spilled:
            log.warning("card log: %d rows that did not fit on the card are in %s", spilled, path)
        else:
            log.error("card log: %d rows could not be written to the card or a fallback folder", len(rows))

    def _below_min_free(self) -> bool:
        if not self.policy.min_free_bytes:
            return False
        try:
            return shutil.disk_usage(self.root).free < self.policy.min_free_bytes
        except OSError:
            return False

    def _on_write_failure(self, error: OSError) -> None:
        self._last_error = error
        if self._failure is not None:
            return
        kind = ("low_space" if isinstance(error, LowSpace) else
                "disk_full" if error.errno in DISK_FULL_ERRNOS else "write_failed")
        log.warning("card log: %s (%s); keeping up to %d records per kind in memory", kind, error,
                    self.policy.max_pending_records)
        self._failure = WriteFailure(self._wall_clock(), self._last_sample, error.errno,
                                     {k: s.pending.dropped for k, s in self._kinds.items()})
        self.event(kind, sample=self._last_sample, errno=error.errno, error=str(error))

    def _on_write_recovered(self, failure: WriteFailure) -> None:
        self._failure = None
        now = self._wall_clock()
        dropped = {k: s.pending.dropped - failure.dropped_before[k] for k, s in self._kinds.items()}
        self.event("disk_space_returned" if failure.errno in DISK_FULL_ERRNOS else "write_recovered",
                   sample=self._last_sample, since_utc=format_utc(failure.since), until_utc=format_utc(now),
                   gap_s=round((now - failure.since).total_seconds(), 3), since_sample=failure.since_sample,
                   until_sample=self._last_sample, dropped_records=dropped)
        log.info("card log: writing again after %.0f s", (now - failure.since).total_seconds())
        failure_again = self._write_all()
        if failure_again is not None:
            self._on_write_failure(failure_again)
