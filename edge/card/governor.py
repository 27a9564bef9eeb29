"""Storage governor: clip limits (per hour, folder size), and as the card fills, first stop saving clips, then thin
old clips; never touch the logs."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.errors import ConfigError

MIB = 1024 * 1024
CLIP_SUFFIXES = (".flac", ".wav")


@dataclass(frozen=True)
class StoragePolicy:
    """Free-space thresholds in bytes; ``thin_clips_below_bytes`` <= ``stop_clips_below_bytes``."""

    stop_clips_below_bytes: int = 512 * MIB
    """Below this much free space no new clips are saved."""
    thin_clips_below_bytes: int = 256 * MIB
    """Below this, the oldest clips are deleted (keeping the newest ``keep_clips_per_label`` of every label)
    until free space is back at ``stop_clips_below_bytes``."""
    keep_clips_per_label: int = 10
    stop_embeddings_below_bytes: int | None = None
    """Below this much free space no window embeddings are written. None: halfway between where new clips stop
    and where everything but health waits (``min_free_bytes``, else the thinning threshold), so clips stop
    first, embeddings next, and detections, effort and events last."""
    clip_format: str = "flac"
    """``flac`` or ``wav``."""
    max_clips_per_hour: int = 0
    """At most this many clips per UTC hour of the events' time; 0: no limit."""
    max_clips_bytes: int = 0
    """No new clip once the clips folder holds this much; 0: no cap."""
    min_free_bytes: int = 0
    """Below this much free space only health records are written; other rows wait in memory (see CardLog)."""
    max_pending_records: int = 100_000
    """Per record kind: rows held in memory while the card is full; beyond this the oldest are dropped (counted)."""
    reserve_bytes: int = 256 * 1024
    """Space reserved on the card at boot for the rows still in memory at stop (see ``edge.card.reserve``)."""
    fallback_dir: Path | None = None
    """Where rows go that do not fit on the card even after the reserve is released (the unit's own disk)."""

    def __post_init__(self) -> None:
        if not 0 <= self.thin_clips_below_bytes <= self.stop_clips_below_bytes:
            raise ConfigError(f"storage thresholds: thin at {self.thin_clips_below_bytes} B must be between 0 and "
                              f"the clip stop threshold {self.stop_clips_below_bytes} B",
                              "stop saving clips first (higher threshold), thin them later (lower threshold)")
        if self.keep_clips_per_label < 0 or self.max_pending_records < 1 or self.reserve_bytes < 0:
            raise ConfigError("storage: keep_clips_per_label and reserve_bytes must be >= 0, max_pending_records >= 1",
                              "use non-negative counts")


EventSink = Callable[..., None]
"""``sink(kind, **fields)``: how the governor reports what it did."""


class StorageGovernor:
    """Decides whether a clip may be saved, and thins clips when free space runs low."""

    def __init__(self, card_root: Path, clips_root: Path, policy: StoragePolicy, report: EventSink) -> None:
        self.card_root = card_root
        self.clips_root = clips_root
        self.policy = policy
        self._report = report
        self.clips_paused = False
        self.embeddings_paused = False
        self._hour: datetime | None = None
        self._clips_this_hour = 0
        self._skipped_this_hour = 0
        self.clips_bytes = sum(self._clip_files(), start=0)

    def _clip_files(self) -> list[int]:
        sizes = []
        for suffix in CLIP_SUFFIXES:
            for path in self.clips_root.glob("*/*" + suffix):
                with contextlib.suppress(OSError):
                    sizes.append(path.stat().st_size)
        return sizes

    def clip_saved(self, size_bytes: int) -> None:
        """Count a clip just written (for the hourly limit and the folder cap)."""
        self._clips_this_hour += 1
        self.clips_bytes += size_bytes

    def allow_clip_at(self, event_utc: datetime) -> bool:
        """The hourly limit and the folder cap, then free space: may a clip of an event at ``event_utc`` be saved?"""
        hour = event_utc.replace(minute=0, second=0, microsecond=0)
        if hour != self._hour:
            self._hour, self._clips_this_hour, self._skipped_this_hour = hour, 0, 0
        limit = self.policy.max_clips_per_hour
        if limit and self._clips_this_hour >= limit:
            self._skipped_this_hour += 1
            if self._skipped_this_hour == 1:
                self._report("clips_hour_limit", hour_utc=hour.isoformat(), max_per_hour=limit)
            return False
        cap = self.policy.max_clips_bytes
        if cap and self.clips_bytes >= cap:
            self._report("clips_folder_full", clips_bytes=self.clips_bytes, max_clips_bytes=cap)
            return False
        return self.allow_clip()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.card_root).free

    def allow_clip(self) -> bool:
        """Thin if needed, then say whether one more clip may be saved (state changes are reported as events)."""
        free = self.check()
        paused = free < self.policy.stop_clips_below_bytes
        if paused != self.clips_paused:
            self.clips_paused = paused
            self._report("clips_paused" if paused else "clips_resumed", disk_free_bytes=free,
                         threshold_bytes=self.policy.stop_clips_below_bytes)
        return not paused

    def allow_embeddings(self) -> bool:
        """Whether window embeddings may still be written (state changes are reported as events)."""
        policy = self.policy
        floor = max(policy.min_free_bytes, policy.thin_clips_below_bytes)
        limit = ((policy.stop_clips_below_bytes + floor) // 2 if policy.stop_embeddings_below_bytes is None
                 else policy.stop_embeddings_below_bytes)
        try:
            free = self.free_bytes()
        except OSError:
            return True  # cannot tell: try, and let the write path report the failure
        paused = free < limit
        if paused != self.embeddings_paused:
            self.embeddings_paused = paused
            self._report("embeddings_paused" if paused else "embeddings_resumed", disk_free_bytes=free,
                         threshold_bytes=limit)
        return not paused

    def check(self) -> int:
        """Free bytes after thinning clips if free space fell below the thinning threshold."""
        free = self.free_bytes()
        if free >= self.policy.thin_clips_below_bytes:
            return free
        deleted, freed = self._thin()
        free = self.free_bytes()
        if deleted:
            self._report("clips_thinned", deleted=deleted, freed_bytes=freed, disk_free_bytes=free,
                         kept_per_label=self.policy.keep_clips_per_label)
        return free

    def _thin(self) -> tuple[int, int]:
        """Delete oldest-first among clips beyond each label's newest ``keep``, until free space recovers."""
        candidates: list[tuple[float, str, Path, int]] = []
        for label_dir in sorted(p for p in self.clips_root.glob("*") if p.is_dir()):
            clips = []
            for path in (p for suffix in CLIP_SUFFIXES for p in label_dir.glob("*" + suffix)):
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    clips.append((stat.st_mtime, path.name, path, stat.st_size))
            clips.sort()
            keep = self.policy.keep_clips_per_label
            candidates.extend(clips[:-keep] if keep else clips)
        candidates.sort()
        deleted = freed = 0
        for _, _, path, size in candidates:
            if self.free_bytes() >= self.policy.stop_clips_below_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                deleted += 1
                freed += size
                self.clips_bytes -= size
        return deleted, freed
