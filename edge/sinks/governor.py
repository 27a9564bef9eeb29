"""Storage governor: as the card fills, first stop saving clips, then thin old clips; never touch the logs."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError

MIB = 1024 * 1024
CLIP_SUFFIX = ".wav"


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
    """Below this much free space no window embeddings are written (None: half the thinning threshold, so clips
    are thinned before embeddings stop, and detections, effort and events outlast both)."""
    max_pending_records: int = 100_000
    """Per record kind: rows held in memory while the card is full; beyond this the oldest are dropped (counted)."""

    def __post_init__(self) -> None:
        if not 0 <= self.thin_clips_below_bytes <= self.stop_clips_below_bytes:
            raise ConfigError(f"storage thresholds: thin at {self.thin_clips_below_bytes} B must be between 0 and "
                              f"the clip stop threshold {self.stop_clips_below_bytes} B",
                              "stop saving clips first (higher threshold), thin them later (lower threshold)")
        if self.keep_clips_per_label < 0 or self.max_pending_records < 1:
            raise ConfigError("storage: keep_clips_per_label must be >= 0 and max_pending_records >= 1",
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
        limit = (policy.thin_clips_below_bytes // 2 if policy.stop_embeddings_below_bytes is None
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
            for path in label_dir.glob("*" + CLIP_SUFFIX):
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
        return deleted, freed
