"""The daemon's contracts and settings: exit codes, the capture-source protocol, lifecycle options, and the
lock that lets the analysis and main threads share one run log."""

from __future__ import annotations

import collections
import errno
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge.audio.chunk import AudioChunk
from edge.audio.mic import CaptureStats, OpenedStream
from edge.card import RunLog
from edge.card.cardformat import CardLogError
from edge.card.cardlog import DISK_FULL_ERRNOS
from edge.errors import EdgeError
from edge.stream.clip_buffer import MAX_CLIP_S

EXIT_OK = 0
EXIT_NO_AUDIO = 3
EXIT_STALLED = 4
EXIT_PIPELINE = 5
EXIT_CARD_INCOMPLETE = 6
"""The run's own work went fine, but rows were not written to the card (full or failing); see the stop event."""
SCHEDULE_POLL_S = 30.0
READ_TIMEOUT_S = 0.2
DEVICE_POLL_S = 0.5
"""While the stream is lost: how often to ask cheaply whether the device is back."""
PAUSE_DETECT_S = 5.0
"""The main loop not running for this long means the whole process was paused (SIGSTOP, swap storm)."""
CLIPPED_SPANS_REMEMBERED = 64
"""Recently clipped detection spans: a span detected for several labels is saved as one clip."""


class Source(Protocol):
    """A capture stream (microphone or paced file) delivering model-rate chunks."""

    stats: CaptureStats

    def open(self, start_sample: int) -> OpenedStream: ...

    def renumber(self, start_sample: int) -> None:
        """Before the first read of a freshly opened stream: number its samples from ``start_sample``."""

    def available(self) -> bool:
        """Cheaply: could :meth:`open` succeed now (the device is present)?"""

    def read(self, timeout: float) -> AudioChunk | None: ...

    @property
    def active(self) -> bool: ...

    def pending_seconds(self) -> float: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DaemonOptions:
    """Lifecycle settings; durations in seconds."""

    window_samples: int
    hop_samples: int
    sample_rate: int
    max_batch: int = 4
    heartbeat_s: float = 60.0
    no_data_s: float = 5.0
    """No samples for this long: the stream is reopened."""
    reopen_backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Waits between failed reopens of a present device; the device is polled every DEVICE_POLL_S meanwhile."""
    reopen_give_up_s: float = 600.0
    """Stream lost this long without a successful reopen: exit non-zero (systemd restarts us)."""
    stall_s: float = 120.0
    """Analysis thread making no progress for this long: exit non-zero."""
    lag_bound_s: float = 30.0
    """Audio waiting beyond this: widen the hop (logged); back to normal below a quarter of it."""
    max_pipeline_restarts: int = 3
    """More inference failures than this within ``pipeline_restart_window_s`` exit non-zero."""
    pipeline_restart_window_s: float = 3600.0
    """Failures older than this no longer count: four transient ones over a season never end the process."""
    stop_budget_s: float = 10.0
    """On stop, keep analysing the backlog for at most this long (systemd's stop timeout is 90 s)."""
    flatline_s: float = 60.0
    """Digital silence this long is reported, then the stream is reopened."""
    clip_pre_roll_s: float = 2.0
    clip_post_roll_s: float = 2.0
    clip_max_s: float = MAX_CLIP_S
    """Longest clip, pre- and post-roll included (the audio an open event holds in memory)."""
    save_clips: bool = False
    background_labels: tuple[str, ...] = ()
    """Prompts (wind, rain, "no animal") that are scored but never reported as detections."""
    privacy_labels: tuple[str, ...] = ()
    """Prompts (human speech) whose hits are logged as privacy events and block clips around them."""
    privacy_guard_s: float = 30.0
    is_file: bool = False
    """The source is a finite file: stop at its end instead of reopening."""
    thermal_paths: tuple[Path, ...] = ()
    clock_sync: str = "unsynchronised"
    drop_startup_pages: bool = False
    """Unmap the clean file pages start-up touched, once the model is loaded and again after the first analysed
    window (``model.low_memory``; edge/daemon/startup_pages.py)."""


@dataclass(frozen=True)
class CardTrouble:
    """Rows of a run that did not reach the card: per kind, the fallback file, how many are lost, and why."""

    not_on_card: dict[str, int]
    fallback: Path | None
    lost: int
    """Rows in neither the card nor the fallback file."""
    error: OSError | None
    """The card's last write error."""

    def as_error(self, log_dir: Path) -> CardLogError:
        """The one-line error of exit code 6: which card, why, what is where, and the fix."""
        code = None if self.error is None else self.error.errno
        if code in DISK_FULL_ERRNOS:
            why, fix = "is full", f"free space on the card at {log_dir} or swap it for an empty one"
        elif code == errno.EROFS:
            why, fix = "is read-only", (f"the card at {log_dir} went read-only (its write-protect switch, or a "
                                        "failing card the kernel stopped writing to): check it with fsck or swap it")
        else:
            why = f"failed ({self.error.strerror if self.error is not None else 'unknown error'})"
            fix = f"check the card at {log_dir} (mounted? fsck) or swap it"
        total = sum(self.not_on_card.values())
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.not_on_card.items() if count)
        kept = total - self.lost
        where = f"{kept} kept in {self.fallback}" if kept and self.fallback is not None else "none kept"
        where += f", {self.lost} lost" if self.lost else ""
        if self.lost:  # dropped from the bounded queue while the card was failing, or no fallback folder took them
            fix += "; give storage.fallback_dir a writable folder on the unit's own disk, and swap a failing card early"
        error = CardLogError(f"the card at {log_dir} {why}: {total} row(s) not written to it ({kinds}); {where}",
                             f"{fix}, then start the unit again")
        error.exit_code = EXIT_CARD_INCOMPLETE
        return error


def describe_error(error: BaseException) -> str:
    """One line for the card: our typed errors as their message, anything else with its type."""
    if isinstance(error, EdgeError):
        return error.message
    return f"{type(error).__name__}: {error}".strip().replace("\n", " ")[:500]


class RecentFailures:
    """Counts failures within a sliding window of time (monotonic seconds), so transient ones age out."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> int:
        """Record a failure at ``now``; returns how many fell within the last ``window_s`` (this one included)."""
        self._times.append(now)
        return self.count(now)

    def count(self, now: float) -> int:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times)


class SerialisedLog:
    """Serialises calls to the run log, which the analysis thread and the main thread both use."""

    def __init__(self, sink: RunLog) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._sink, name)

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return locked
