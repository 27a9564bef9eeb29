"""The field daemon: capture -> windows -> stages -> detector -> card log, with liveness on the data.

Threads: PortAudio's callback fills the ring; one analysis thread reads, windows, infers and logs;
the main thread handles signals, heartbeats and the stall watchdog. Recovery is tiered: reopen the
stream (polling for the device, short capped backoff) -> rebuild the inference stages (any exception while
analysing, or NaN embeddings) -> exit non-zero so systemd restarts the unit. Every failure is an event on the
card first (``stream_lost``, ``pipeline_failed``, ``giving_up``); nothing that failed ends as exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from edge.audio.chunk import AudioChunk
from edge.audio.mic import OpenedStream
from edge.audio.windowing import Window, Windower
from edge.card import RunLog
from edge.config.schedule import Schedule
from edge.daemon import notify
from edge.daemon.clip_gate import ClipGate
from edge.daemon.contract import (
    CLIPPED_SPANS_REMEMBERED,
    DEVICE_POLL_S,
    EXIT_CARD_INCOMPLETE,
    EXIT_NO_AUDIO,
    EXIT_OK,
    EXIT_PIPELINE,
    EXIT_STALLED,
    PAUSE_DETECT_S,
    READ_TIMEOUT_S,
    SCHEDULE_POLL_S,
    CardTrouble,
    DaemonOptions,
    RecentFailures,
    SerialisedLog,
    Source,
    describe_error,
)
from edge.daemon.health import SignalMonitor, process_health
from edge.daemon.startup_pages import drop_clean_file_pages
from edge.errors import AudioError, BackendError
from edge.scoring.scorer import Scores
from edge.stream.clip_buffer import Clip, ClipBuffer
from edge.stream.detector import DetectionEvent, EventDetector
from edge.stream.pipeline import Stages, embed_and_score

log = logging.getLogger(__name__)

__all__ = ["EXIT_CARD_INCOMPLETE", "EXIT_NO_AUDIO", "EXIT_OK", "EXIT_PIPELINE", "EXIT_STALLED", "Daemon",
           "DaemonOptions", "Source"]


class Daemon:
    """One run of the recorder: call :meth:`run` from the main thread; returns the exit code."""

    def __init__(self, source: Source, stages_factory: Callable[[], Stages], detector: EventDetector,
                 sink: RunLog, options: DaemonOptions, schedule: Schedule | None = None,
                 stages: Stages | None = None) -> None:
        self.source = source
        self.stages_factory = stages_factory
        self.stages = stages or stages_factory()
        self.detector = detector
        self.sink: RunLog = SerialisedLog(sink)  # type: ignore[assignment]
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
        self._pipeline_restarts = RecentFailures(self.options.pipeline_restart_window_s)
        self._clips = ClipBuffer(options.sample_rate, 3 * options.window_samples, options.clip_max_s)
        self._anchor: tuple[datetime, int] | None = None
        """(UTC, sample) of the open stream's anchor: converts samples to wall-clock time."""
        self._gate = ClipGate(round(options.privacy_guard_s * options.sample_rate),
                              (round(options.clip_pre_roll_s * options.sample_rate),
                               round(options.clip_post_roll_s * options.sample_rate)), CLIPPED_SPANS_REMEMBERED)
        self._xruns_logged = 0
        self._ready_sent = False
        self.reopen_requested = False
        """Set when the data says the microphone is dead (flatline): the loop reopens the stream."""
        self.card_trouble: CardTrouble | None = None
        """After :meth:`run`: the rows the card did not take, where they went and why (None: it took them all)."""

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Open, analyse until stopped (signal, end of file, fatal error), flush everything, return exit code."""
        self._install_signals()
        if self.options.drop_startup_pages:
            drop_clean_file_pages()  # imports and the model load: before the first inference adds its own peak
        try:
            self._open_stream(None)
        except AudioError as e:
            # e.g. the USB microphone is missing at boot: say so on the card, then exit non-zero (systemd retries)
            self.sink.event("stream_open_failed", 0, reason=e.message)
            self.sink.close()
            if not self.options.is_file:  # the documented "no audio" exit; an unreadable --input file stays 2
                e.exit_code = EXIT_NO_AUDIO
            raise
        worker = threading.Thread(target=self._analyse_loop, name="analysis", daemon=True)
        worker.start()
        next_heartbeat = time.monotonic() + self.options.heartbeat_s
        started = last_tick = time.monotonic()
        while worker.is_alive():
            worker.join(timeout=0.25)
            now = time.monotonic()
            if now - last_tick > PAUSE_DETECT_S:
                # the whole process was not running (SIGSTOP, swap): not a stalled analysis, not a lost stream
                self.sink.event("process_paused", self.analysed_end, paused_s=round(now - last_tick, 1))
                self.progress_at = now
            last_tick = now
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
        not_on_card = self.sink.settle(self.options.stop_budget_s)
        if any(not_on_card.values()) and self.exit_code == EXIT_OK:
            self.exit_code = EXIT_CARD_INCOMPLETE
        fallback = self.sink.fallback_file() if any(not_on_card.values()) else None
        self.sink.event("stop", self.source_end(), exit_code=self.exit_code, rows_not_on_card=not_on_card,
                        fallback_file=str(fallback) if fallback else None)
        self.sink.close()
        if any(not_on_card.values()):
            self.card_trouble = CardTrouble(not_on_card, fallback, self.sink.rows_lost(),
                                            self.sink.last_write_error())
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

    def utc_of(self, sample: int) -> datetime:
        """Wall-clock time of ``sample`` by the current stream's anchor."""
        assert self._anchor is not None
        anchor_utc, anchor_sample = self._anchor
        return anchor_utc + timedelta(seconds=(sample - anchor_sample) / self.options.sample_rate)

    def _open_stream(self, previous_end: int | None) -> int:
        """Open the source; after an outage its timeline continues at the wall-clock time since ``previous_end``."""
        provisional = previous_end or 0
        opened: OpenedStream = self.source.open(provisional)
        start = provisional
        if previous_end is not None and self._anchor is not None:
            elapsed = (opened.anchor_utc - self.utc_of(previous_end)).total_seconds()
            start = previous_end + max(0, round(elapsed * self.options.sample_rate))
            self.source.renumber(start)
        self._anchor = (opened.anchor_utc, start)
        self.sink.open_stream(opened.anchor_utc, start, self.options.clock_sync)
        self.sink.event("audio_device", start, device=opened.device, rate=opened.rate, channels=opened.channels)
        self.sink.flush()
        self.windower.reset(start)
        self._clips.reset()
        return start

    def _record_gap(self, end: int, start: int, **fields: Any) -> None:
        rate = self.options.sample_rate
        self.sink.event("gap", end, end_sample=start, seconds=round((start - end) / rate, 3),
                        from_utc=self.utc_of(end).isoformat(), to_utc=self.utc_of(start).isoformat(), **fields)

    def _reopen_after_loss(self, starved_s: float, reason: str = "no audio") -> bool:
        """Tier 1: analyse what was captured, close, poll for the device and reopen; False when we give up."""
        self._finish_stream()
        end = self.source_end()
        self.sink.event("stream_lost", end, silent_s=round(starved_s, 1), reason=reason)
        self.sink.flush()
        self.source.close()
        return self._reconnect(end)

    def _reconnect(self, end: int) -> bool:
        """Reopen as soon as the device is back (polled), with short capped waits between failed opens."""
        lost_at = time.monotonic()
        failures = 0
        last_error = "device not present"
        while not self.stop.is_set():
            self.progress_at = time.monotonic()
            notify.watchdog()
            wait = DEVICE_POLL_S
            if self.source.available():
                try:
                    start = self._open_stream(end)
                except AudioError as e:
                    failures += 1
                    last_error = e.message
                    log.warning("reopen %d failed: %s", failures, e.message)
                    backoff = self.options.reopen_backoff_s
                    wait = backoff[min(failures - 1, len(backoff) - 1)]
                else:
                    self._record_gap(end, start, reason="stream_lost", reopen_failures=failures)
                    return True
            if time.monotonic() - lost_at > self.options.reopen_give_up_s:
                self.sink.event("giving_up", end, reopen_failures=failures, reason=last_error,
                                lost_s=round(time.monotonic() - lost_at, 1))
                return False
            if self.stop.wait(wait):
                return True
        return True

    # ---------------------------------------------------------------- analysis thread

    def _analyse_loop(self) -> None:
        starved_s = 0.0
        """Time spent waiting in reads that returned nothing (a paused process does not count)."""
        pending: list[Window] = []
        try:
            while not self.stop.is_set():
                self.progress_at = time.monotonic()
                if self.schedule is not None and not self.schedule.is_on(datetime.now(timezone.utc)):
                    self._process_all(pending + self._drain())
                    pending = []
                    if not self._sleep_off_schedule():
                        self.exit_code = EXIT_NO_AUDIO
                        return
                    starved_s = 0.0
                    continue
                asked = time.monotonic()
                chunk = self.source.read(timeout=READ_TIMEOUT_S)
                if chunk is None:
                    if self.options.is_file and not self.source.active:
                        break
                    starved_s += min(time.monotonic() - asked, READ_TIMEOUT_S)
                    if starved_s > self.options.no_data_s or not self.source.active:
                        self._process_all(pending)
                        pending = []
                        if not self._reopen_after_loss(starved_s):
                            self.exit_code = EXIT_NO_AUDIO
                            return
                        starved_s = 0.0
                    continue
                starved_s = 0.0
                pending.extend(self._accept(chunk))
                if self.reopen_requested:
                    self.reopen_requested = False
                    self.monitor.reset()
                    self._process_all(pending)
                    pending = []
                    if not self._reopen_after_loss(0.0, reason="flatline"):
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
        except Exception as e:  # any failure of the analysis thread is on the card and a non-zero exit
            reason = describe_error(e)
            log.error("analysis stopped: %s", reason)
            log.debug("analysis failure", exc_info=True)
            self.sink.event("pipeline_failed", self.analysed_end, reason=reason, action="exit",
                            restarts=self._pipeline_restarts.count(time.monotonic()))
            self.exit_code = EXIT_NO_AUDIO if isinstance(e, AudioError) else EXIT_PIPELINE
        finally:
            self._close_events()
            self._write_clips(None)

    def _process_all(self, windows: list[Window]) -> None:
        for batch_start in range(0, len(windows), self.options.max_batch):
            self._process(windows[batch_start : batch_start + self.options.max_batch])

    def _finish_stream(self) -> None:
        """Before closing a stream: analyse the audio already captured, the unfinished last hop included."""
        self._process_all(self._drain())
        self._close_events()

    def _sleep_off_schedule(self) -> bool:
        """Close the stream while the schedule is off (saves power), then reopen on the same timeline.

        False when the microphone cannot be reopened (recorded; the caller exits non-zero).
        """
        assert self.schedule is not None
        end = self.source_end()
        until = self.schedule.next_change(datetime.now(timezone.utc))
        self._close_events()
        self._write_clips(None)
        self.source.close()
        self.sink.event("scheduled_off", end, until=until.isoformat() if until else None)
        self.sink.flush()
        while not self.stop.is_set() and not self.schedule.is_on(datetime.now(timezone.utc)):
            self.progress_at = time.monotonic()
            notify.watchdog()
            self.stop.wait(min(SCHEDULE_POLL_S, max(0.0, (until - datetime.now(timezone.utc)).total_seconds()))
                           if until else SCHEDULE_POLL_S)
        if self.stop.is_set():
            return True
        try:
            start = self._open_stream(end)
        except AudioError as e:
            self.sink.event("stream_open_failed", end, reason=e.message, when="schedule on")
            self.sink.flush()
            return self._reconnect(end)
        self.sink.event("scheduled_on", start, off_s=round((start - end) / self.options.sample_rate, 1))
        return True

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
            needed = self.detector.earliest_pending_start()
            pre = round(self.options.clip_pre_roll_s * self.options.sample_rate)
            self._clips.push(chunk, None if needed is None else needed - pre)
        return self.windower.push(chunk)

    def _process(self, windows: list[Window]) -> None:
        started = time.perf_counter()
        embeddings, scores = self._score(windows)
        self.inference_s += time.perf_counter() - started
        self.windows_analysed += len(windows)
        starts, ends = [w.start_sample for w in windows], [w.end_sample for w in windows]
        events = self.detector.update(starts, ends, scores)
        # every window of speech guards clips, confirmed or not, in a cooldown or not
        self._gate.heard(self.detector.hits(self.options.privacy_labels, starts, ends, scores))
        self._emit(events)
        self._write_clips(windows[-1].start_sample)
        pending = self.detector.earliest_pending_start()
        self._gate.forget(windows[-1].start_sample if pending is None else min(pending, windows[-1].start_sample))
        for w in windows:
            start = max(w.start_sample, self.effort_end)
            if w.end_sample > start:
                self.sink.effort(start, w.end_sample)
                self.effort_end = w.end_sample
        self.analysed_end = windows[-1].end_sample
        self.sink.embeddings(starts, ends, embeddings)
        self.sink.flush()
        if not self._ready_sent:
            notify.ready(f"analysing, first window at sample {windows[0].start_sample}")
            self._ready_sent = True
            if self.options.drop_startup_pages:
                drop_clean_file_pages()  # the first inference's set-up and the audio stack's device scan
        notify.watchdog()

    def _score(self, windows: list[Window]) -> tuple[np.ndarray, Scores]:
        """Embed and score a batch; tier 2 on any failure or NaN output: rebuild the stages and retry the same
        windows. Returns the ``(B, D)`` embeddings (for the card) and the scores."""
        while True:
            try:
                embeddings, scores = embed_and_score(self.stages, windows)
            except Exception as e:  # ONNX Runtime, TensorRT, CUDA and our own errors alike
                self._restart_pipeline(windows[0].start_sample, "pipeline_failed", describe_error(e))
                continue
            if np.isfinite(scores.cosine).all():
                return embeddings, scores
            self._restart_pipeline(windows[0].start_sample, "nan_embeddings", "inference returned NaN embeddings")

    def _restart_pipeline(self, sample: int, kind: str, reason: str) -> None:
        """Record the failure, then rebuild the stages; too many rebuilds is fatal (exit non-zero)."""
        recent = self._pipeline_restarts.add(time.monotonic())
        fatal = recent > self.options.max_pipeline_restarts
        self.sink.event(kind, sample, reason=reason, restarts=recent, action="exit" if fatal else "rebuild_stages")
        self.sink.flush()
        if fatal:
            raise BackendError(f"inference failed {recent} times within "
                               f"{self.options.pipeline_restart_window_s:g} s, last: {reason}",
                               "check the bundle and the model file; the journal has the details")
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
        self._gate.heard([(hit.start_sample, hit.end_sample) for hit in privacy])
        hidden = set(self.options.privacy_labels) | set(self.options.background_labels)
        detections = [e for e in events if e.label not in hidden]
        if detections:
            self.sink.detections(detections)
            self.detections_logged += len(detections)
        if self.options.save_clips:
            self._gate.hold(detections, self.detector.open_spans(self.options.privacy_labels), self._cut_clip)

    def _cut_clip(self, event: DetectionEvent) -> Clip | None:
        """The audio of ``event``'s clip, pre- and post-roll included, as far as it is still held."""
        rate = self.options.sample_rate
        return self._clips.cut(max(0, event.start_sample - round(self.options.clip_pre_roll_s * rate)),
                               event.end_sample + round(self.options.clip_post_roll_s * rate))

    def _write_clips(self, analysed_from: int | None) -> None:
        """Write the held clips whose privacy guard was heard (all undecided ones when ``analysed_from`` is None)."""
        if not self.options.save_clips:
            return
        rate = self.options.sample_rate
        for held in self._gate.decide(analysed_from, lambda: self.detector.open_spans(self.options.privacy_labels)):
            event, clip = held.event, held.clip
            if clip.cut_samples:
                self.sink.event("clip_cut", event.start_sample, label=event.label,
                                clip_start_sample=clip.start_sample, missing_s=round(clip.cut_samples / rate, 3))
            self.sink.save_clip(event, clip.pieces, clip.start_sample, cut_samples=clip.cut_samples)

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

