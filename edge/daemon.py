"""The field daemon: capture -> windows -> stages -> detector -> card log, with liveness on the data.

Threads: PortAudio's callback fills the ring; one analysis thread reads, windows, infers and logs;
the main thread handles signals, heartbeats and the stall watchdog. Recovery is tiered: reopen the
stream with backoff -> rebuild the inference stages -> exit non-zero so systemd restarts the unit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge import notify
from edge.audio.chunk import AudioChunk
from edge.audio.mic import CaptureStats, OpenedStream
from edge.detect import DetectionEvent, EventDetector
from edge.errors import AudioError, BackendError
from edge.health import SignalMonitor, process_health
from edge.pipeline import Stages, score_windows
from edge.schedule import Schedule
from edge.sinks import RunLog
from edge.windowing import Window, Windower

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NO_AUDIO = 3
EXIT_STALLED = 4
EXIT_PIPELINE = 5
SCHEDULE_POLL_S = 30.0
PRIVACY_MEMORY = 16
"""Recent privacy hits remembered for the clip guard."""


class Source(Protocol):
    """A capture stream (microphone or paced file) delivering model-rate chunks."""

    stats: CaptureStats

    def open(self, start_sample: int) -> OpenedStream: ...

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
    reopen_backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
    max_reopen_failures: int = 20
    """Consecutive failed reopens before exiting non-zero (systemd restarts us)."""
    stall_s: float = 120.0
    """Analysis thread making no progress for this long: exit non-zero."""
    lag_bound_s: float = 30.0
    """Audio waiting beyond this: widen the hop (logged); back to normal below a quarter of it."""
    max_pipeline_restarts: int = 3
    stop_budget_s: float = 10.0
    """On stop, keep analysing the backlog for at most this long (systemd's stop timeout is 90 s)."""
    flatline_s: float = 60.0
    """Digital silence this long is reported, then the stream is reopened."""
    clip_pre_roll_s: float = 2.0
    clip_post_roll_s: float = 2.0
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


class Daemon:
    """One run of the recorder: call :meth:`run` from the main thread; returns the exit code."""

    def __init__(self, source: Source, stages_factory: Callable[[], Stages], detector: EventDetector,
                 sink: RunLog, options: DaemonOptions, schedule: Schedule | None = None,
                 stages: Stages | None = None) -> None:
        self.source = source
        self.stages_factory = stages_factory
        self.stages = stages or stages_factory()
        self.detector = detector
        self.sink: RunLog = _Serialised(sink)  # type: ignore[assignment]
        self.options = options
        self.schedule = schedule
        self.windower = Windower(options.window_samples, options.hop_samples)
        self.monitor = SignalMonitor(options.sample_rate, options.flatline_s)
        self.stop = threading.Event()
        self.exit_code = EXIT_OK
        self.progress_at = time.monotonic()
        self.samples_received = 0
        self.windows_analysed = 0
        self.detections_logged = 0
        self.inference_s = 0.0
        self.effort_end = 0
        self.analysed_end = 0
        self.degraded = False
        self._pipeline_restarts = 0
        self._clip_audio: list[AudioChunk] = []
        self._privacy_hits: list[DetectionEvent] = []
        self._xruns_logged = 0
        self._ready_sent = False
        self.reopen_requested = False
        """Set when the data says the microphone is dead (flatline): the loop reopens the stream."""

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Open, analyse until stopped (signal, end of file, fatal error), flush everything, return exit code."""
        self._install_signals()
        try:
            self._open(0)
        except AudioError as e:
            # e.g. the USB microphone is missing at boot: say so on the card, then exit non-zero (systemd retries)
            self.sink.event("stream_open_failed", 0, reason=e.message)
            self.sink.close()
            raise
        worker = threading.Thread(target=self._analyse_loop, name="analysis", daemon=True)
        worker.start()
        next_heartbeat = time.monotonic() + self.options.heartbeat_s
        started = time.monotonic()
        while worker.is_alive():
            worker.join(timeout=0.25)
            now = time.monotonic()
            if now >= next_heartbeat:
                self._heartbeat(now - started)
                next_heartbeat = now + self.options.heartbeat_s
            if now - self.progress_at > self.options.stall_s and not self.stop.is_set():
                self.sink.event("inference_stalled", self.analysed_end, stalled_s=round(now - self.progress_at, 1))
                self.exit_code = EXIT_STALLED
                self.stop.set()
                worker.join(timeout=5.0)
                break
        notify.stopping()
        self._heartbeat(time.monotonic() - started)
        self.source.close()
        self.sink.event("stop", self.source_end(), exit_code=self.exit_code)
        self.sink.flush()
        self.sink.close()
        return self.exit_code

    def _install_signals(self) -> None:
        def request_stop(signum: int, _: Any) -> None:
            log.info("signal %d: flushing and stopping", signum)
            self.stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)

    def source_end(self) -> int:
        return self.windower.buffered_end

    def _open(self, start_sample: int) -> None:
        opened = self.source.open(start_sample)
        self.sink.open_stream(opened.anchor_utc, opened.anchor_sample, self.options.clock_sync)
        self.sink.event("audio_device", start_sample, device=opened.device, rate=opened.rate,
                        channels=opened.channels)
        self.windower.reset(start_sample)

    def _reopen_with_backoff(self, since: float) -> bool:
        """Tier 1: close and reopen the stream until it delivers again; False when we should give up."""
        end = self.source_end()
        self.sink.event("stream_lost", end, silent_s=round(time.monotonic() - since, 1))
        self._close_events()
        self.source.close()
        failures = 0
        while not self.stop.is_set():
            delay = self.options.reopen_backoff_s[min(failures, len(self.options.reopen_backoff_s) - 1)]
            self.progress_at = time.monotonic()
            if self.stop.wait(delay):
                return True
            start = end + round((time.monotonic() - since) * self.options.sample_rate)
            try:
                self._open(start)
            except AudioError as e:
                failures += 1
                log.warning("reopen %d failed: %s", failures, e.message)
                if failures >= self.options.max_reopen_failures:
                    self.sink.event("giving_up", end, reopen_failures=failures, reason=e.message)
                    return False
                continue
            self.sink.event("gap", end, end_sample=start, seconds=round((start - end) / self.options.sample_rate, 3))
            return True
        return True

    # ---------------------------------------------------------------- analysis thread

    def _analyse_loop(self) -> None:
        last_data = time.monotonic()
        pending: list[Window] = []
        try:
            while not self.stop.is_set():
                self.progress_at = time.monotonic()
                if self.schedule is not None and not self.schedule.is_on(datetime.now(timezone.utc)):
                    pending.extend(self._drain())
                    for batch_start in range(0, len(pending), self.options.max_batch):
                        self._process(pending[batch_start : batch_start + self.options.max_batch])
                    pending = []
                    self._sleep_off_schedule()
                    last_data = time.monotonic()
                    continue
                chunk = self.source.read(timeout=0.2)
                if chunk is None:
                    if self.options.is_file and not self.source.active:
                        break
                    if time.monotonic() - last_data > self.options.no_data_s or not self.source.active:
                        if not self._reopen_with_backoff(last_data):
                            self.exit_code = EXIT_NO_AUDIO
                            return
                        last_data = time.monotonic()
                    continue
                last_data = time.monotonic()
                pending.extend(self._accept(chunk))
                if self.reopen_requested:
                    self.reopen_requested = False
                    self.monitor.reset()
                    if not self._reopen_with_backoff(last_data):
                        self.exit_code = EXIT_NO_AUDIO
                        return
                while pending and not self.stop.is_set():
                    batch, pending = pending[: self.options.max_batch], pending[self.options.max_batch :]
                    self._process(batch)
                    self._adapt_hop()
            pending.extend(self._drain())
            deadline = time.monotonic() + self.options.stop_budget_s
            while pending and time.monotonic() < deadline:
                batch, pending = pending[: self.options.max_batch], pending[self.options.max_batch :]
                self._process(batch)
            if pending:
                self.sink.event("unanalysed_at_stop", pending[0].start_sample, end_sample=pending[-1].end_sample,
                                windows=len(pending))
        except BackendError as e:
            self.sink.event("pipeline_failed", self.analysed_end, reason=e.message)
            self.exit_code = EXIT_PIPELINE
        finally:
            self._close_events()

    def _sleep_off_schedule(self) -> None:
        """Close the stream while the schedule is off (saves power), then reopen on the same timeline."""
        assert self.schedule is not None
        end = self.source_end()
        until = self.schedule.next_change(datetime.now(timezone.utc))
        self._close_events()
        self.source.close()
        self.sink.event("scheduled_off", end, until=until.isoformat() if until else None)
        self.sink.flush()
        off_since = time.monotonic()
        while not self.stop.is_set() and not self.schedule.is_on(datetime.now(timezone.utc)):
            self.progress_at = time.monotonic()
            notify.watchdog()
            self.stop.wait(min(SCHEDULE_POLL_S, max(0.0, (until - datetime.now(timezone.utc)).total_seconds()))
                           if until else SCHEDULE_POLL_S)
        if self.stop.is_set():
            return
        start = end + round((time.monotonic() - off_since) * self.options.sample_rate)
        self._open(start)
        self.sink.event("scheduled_on", start, off_s=round((start - end) / self.options.sample_rate, 1))

    def _drain(self) -> list[Window]:
        """On stop or end of file: take the audio already captured (the ring), then the tail window."""
        windows: list[Window] = []
        while self.source.pending_seconds() > 0 and (chunk := self.source.read(timeout=0.0)) is not None:
            windows.extend(self._accept(chunk))
        return windows + self.windower.flush()

    def _accept(self, chunk: AudioChunk) -> list[Window]:
        """Account the chunk, restart windowing across a gap, and return the windows it completes."""
        if chunk.start_sample != self.windower.buffered_end:
            gap_start = self.windower.buffered_end
            self.sink.event("gap", gap_start, end_sample=chunk.start_sample,
                            seconds=round((chunk.start_sample - gap_start) / self.options.sample_rate, 3),
                            reason="ring overwrite")
            self._close_events()
            self.windower.reset(chunk.start_sample)
        self.samples_received += chunk.samples.shape[0]
        for kind, fields in self.monitor.update(chunk):
            self.sink.event(kind, chunk.start_sample, **fields)
            self.reopen_requested |= kind == "flatline" and not self.options.is_file
        overflows = self.source.stats.overflows
        if overflows > self._xruns_logged:
            self.sink.event("xrun", chunk.start_sample, count=overflows - self._xruns_logged)
            self._xruns_logged = overflows
        if self.options.save_clips:
            self._keep_for_clips(chunk)
        return self.windower.push(chunk)

    def _process(self, windows: list[Window]) -> None:
        started = time.perf_counter()
        scores = score_windows(self.stages, windows)
        if not np.isfinite(scores.cosine).all():
            self._restart_pipeline(windows[0].start_sample)
            return
        self.inference_s += time.perf_counter() - started
        self.windows_analysed += len(windows)
        events = self.detector.update([w.start_sample for w in windows], [w.end_sample for w in windows], scores)
        self._emit(events)
        for w in windows:
            start = max(w.start_sample, self.effort_end)
            if w.end_sample > start:
                self.sink.effort(start, w.end_sample)
                self.effort_end = w.end_sample
        self.analysed_end = windows[-1].end_sample
        self.sink.flush()
        if not self._ready_sent:
            notify.ready(f"analysing, first window at sample {windows[0].start_sample}")
            self._ready_sent = True
        notify.watchdog()

    def _restart_pipeline(self, sample: int) -> None:
        """Tier 2: NaN/inf embeddings — rebuild the stages; too many rebuilds is fatal."""
        self._pipeline_restarts += 1
        self.sink.event("nan_embeddings", sample, restarts=self._pipeline_restarts)
        if self._pipeline_restarts > self.options.max_pipeline_restarts:
            raise BackendError("inference keeps returning NaN embeddings", "check the bundle and the model file")
        self.stages = self.stages_factory()

    def _adapt_hop(self) -> None:
        """Widen the hop when audio piles up; restore it when the backlog is gone. Always logged."""
        lag = self.lag_seconds()
        base, current = self.options.hop_samples, self.windower.hop
        if lag > self.options.lag_bound_s and current < self.options.window_samples:
            wider = min(self.options.window_samples, current * 2)
            rate = self.options.sample_rate
            self.sink.event("degraded", self.analysed_end, lag_s=round(lag, 2), hop_from_s=current / rate,
                            hop_to_s=wider / rate)
            self.windower.hop = wider
            self.degraded = True
        elif self.degraded and lag < self.options.lag_bound_s / 4:
            self.sink.event("recovered", self.analysed_end, lag_s=round(lag, 2), hop_s=base / self.options.sample_rate)
            self.windower.hop = base
            self.degraded = False

    def lag_seconds(self) -> float:
        """Audio captured beyond the end of the next window still to analyse (the backlog), in seconds."""
        next_end = max(self.analysed_end + self.windower.hop, self.windower.stream_start + self.windower.window)
        waiting = max(0, self.windower.buffered_end - next_end)
        return waiting / self.options.sample_rate + self.source.pending_seconds()

    # ---------------------------------------------------------------- outputs

    def _close_events(self) -> None:
        self._emit(self.detector.flush())
        self.sink.flush()

    def _emit(self, events: list[DetectionEvent]) -> None:
        """Log animal detections, log privacy hits as events, drop background prompts; then clips."""
        if not events:
            return
        privacy = [e for e in events if e.label in self.options.privacy_labels]
        for hit in privacy:
            self.sink.event("privacy_hit", hit.start_sample, end_sample=hit.end_sample)
        self._privacy_hits = (self._privacy_hits + privacy)[-PRIVACY_MEMORY:]
        hidden = set(self.options.privacy_labels) | set(self.options.background_labels)
        detections = [e for e in events if e.label not in hidden]
        if detections:
            self.sink.detections(detections)
            self.detections_logged += len(detections)
        if self.options.save_clips:
            guard = round(self.options.privacy_guard_s * self.options.sample_rate)
            for event in detections:
                if any(_overlap(event, p, guard) for p in self._privacy_hits):
                    continue
                clip = self._clip_for(event)
                if clip is not None:
                    self.sink.save_clip(event, clip[0], clip[1])

    def _keep_for_clips(self, chunk: AudioChunk) -> None:
        self._clip_audio.append(chunk)
        keep_from = chunk.end_sample - 3 * self.options.window_samples
        while self._clip_audio and self._clip_audio[0].end_sample < keep_from:
            self._clip_audio.pop(0)

    def _clip_for(self, event: DetectionEvent) -> tuple[np.ndarray, int] | None:
        rate = self.options.sample_rate
        start = max(0, event.start_sample - round(self.options.clip_pre_roll_s * rate))
        end = event.end_sample + round(self.options.clip_post_roll_s * rate)
        parts = [c for c in self._clip_audio if c.end_sample > start and c.start_sample < end]
        if not parts:
            return None
        audio = np.concatenate([c.samples for c in parts])
        first = parts[0].start_sample
        lo, hi = max(0, start - first), min(audio.shape[0], end - first)
        return audio[lo:hi], first + lo

    def _heartbeat(self, uptime_s: float) -> None:
        stats = self.source.stats
        audio_s = self.analysed_end / self.options.sample_rate
        self.sink.health({
            "uptime_s": round(uptime_s, 1),
            "samples_received": self.samples_received,
            "windows_analysed": self.windows_analysed,
            "lag_s": round(self.lag_seconds(), 3),
            "xruns": stats.overflows,
            "overwritten_frames": stats.overwritten_frames,
            "rtf": round(self.windows_analysed * self.windower.hop / self.options.sample_rate / self.inference_s, 2)
            if self.inference_s else None,
            "hop_s": self.windower.hop / self.options.sample_rate,
            "analysed_until_s": round(audio_s, 3),
            **process_health(self.options.thermal_paths),
        })
        self.sink.flush()


def _overlap(a: DetectionEvent, b: DetectionEvent, margin: int = 0) -> bool:
    return a.start_sample < b.end_sample + margin and b.start_sample - margin < a.end_sample


class _Serialised:
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
