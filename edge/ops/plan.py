"""A deployment budget for one unit config: windows, accelerator duty, storage growth and energy per day."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from edge.card.embedformat import record_bytes
from edge.config.loader import UnitConfig
from edge.config.schedule import build_schedule

SECONDS_PER_DAY = 86_400
MS_PER_SECOND = 1_000
MB = 1_000_000
GB_IN_MB = 1_000
CLIP_RATE_HZ = 48_000
"""Clips are written at the model rate, mono."""
CLIP_BYTES_PER_SAMPLE = 2
"""16-bit PCM."""
FLAC_SIZE_RATIO = 0.6
"""FLAC size / WAV size for field recordings (background noise compresses poorly); an estimate."""
DETECTION_RECORD_BYTES = 200
"""One detection row in the SD-card log (ids, times, label, scores); an estimate."""
EMBEDDING_DIM = 512
"""BioLingual's embedding size, for the on-card embedding records."""
HEARTBEAT_RECORD_BYTES = 700
"""One health row (counters, lag, RSS, temperature, disk); an estimate checked against a real card by the tests."""
EFFORT_RECORD_BYTES = 140
"""One effort row; the runtime writes one per analysed minute plus one per detection batch (effort is written
with, and before, the detections it covers)."""


@dataclass(frozen=True)
class PlanInputs:
    """What the plan assumes beyond the config."""

    day: dt.date
    """The local date the schedule is evaluated for (solar periods change through the year)."""
    ms_per_window: float | None = None
    """Measured inference time per window (e.g. from `bench`); None: duty and energy are not computed."""
    detections_per_hour: float = 10.0
    """Assumed detection rate while listening."""
    card_gb: float = 32.0
    os_gb: float = 8.0
    """Space already used by the OS, software and the bundle."""


@dataclass(frozen=True)
class DeploymentPlan:
    on_hours: float
    windows_per_day: int
    busy_while_on: float | None
    """Fraction of listening time the accelerator is busy (>= 1: it cannot keep up)."""
    busy_per_day: float | None
    """Fraction of the whole day the accelerator is busy."""
    detections_per_day: float
    clips_per_day: float
    log_mb_per_day: float
    clips_mb_per_day: float
    embeddings_mb_per_day: float
    """Window embeddings on the card (``storage.embeddings``); 0 when off."""
    days_until_clips_stop: float
    """When clips stop (cap or free-space percentage reached); ``inf`` if never."""
    days_until_full: float
    """When free space reaches ``governor.min_free_mb``; ``inf`` if nothing grows."""
    wh_per_day: float | None


def clip_bytes(config: UnitConfig) -> float:
    """Size of one clip of the shortest event (confirm_n windows, one hop apart) plus the pre/post margins,
    compressed when FLAC."""
    clips = config.storage.clips
    analysis = config.analysis
    event_s = analysis.window_s + (analysis.confirm_n - 1) * analysis.hop_s
    seconds = event_s + clips.pre_s + clips.post_s
    ratio = FLAC_SIZE_RATIO if clips.format == "flac" else 1.0
    return seconds * CLIP_RATE_HZ * CLIP_BYTES_PER_SAMPLE * ratio


def make_plan(config: UnitConfig, inputs: PlanInputs) -> DeploymentPlan:
    """The budget for ``inputs.day``: the 24 h from local midnight in the schedule's time zone."""
    schedule = build_schedule(config.schedule)
    start = schedule.midnight(inputs.day)
    on_s = schedule.on_seconds(start, start + dt.timedelta(seconds=SECONDS_PER_DAY))
    on_hours = on_s / 3600
    windows = math.floor(on_s / config.analysis.hop_s)

    busy_on = busy_day = wh = None
    if inputs.ms_per_window is not None:
        busy_on = inputs.ms_per_window / (config.analysis.hop_s * MS_PER_SECOND)
        busy_day = windows * inputs.ms_per_window / (SECONDS_PER_DAY * MS_PER_SECOND)
        power = config.power
        listening_w = power.listen_w + min(busy_on, 1.0) * (power.infer_w - power.listen_w)
        wh = (SECONDS_PER_DAY - on_s) / 3600 * power.off_w + on_hours * listening_w

    detections = inputs.detections_per_hour * on_hours
    clips_cfg = config.storage.clips
    clips = 0.0
    if clips_cfg.mode == "detections":
        per_hour = inputs.detections_per_hour
        if clips_cfg.max_per_hour:
            per_hour = min(per_hour, clips_cfg.max_per_hour)
        clips = per_hour * on_hours
    effort_rows = on_s / 60 + detections
    log_mb = (detections * DETECTION_RECORD_BYTES + effort_rows * EFFORT_RECORD_BYTES
              + SECONDS_PER_DAY / config.health.heartbeat_s * HEARTBEAT_RECORD_BYTES) / MB
    clips_mb = clips * clip_bytes(config) / MB
    dtype = config.storage.embeddings
    embeddings_mb = 0.0 if dtype == "off" else windows * record_bytes(EMBEDDING_DIM, dtype) / MB
    clips_stop, full = _fill_days(config, inputs, log_mb + embeddings_mb, clips_mb)
    return DeploymentPlan(on_hours, windows, busy_on, busy_day, detections, clips, log_mb, clips_mb,
                          embeddings_mb, clips_stop, full, wh)


def _fill_days(config: UnitConfig, inputs: PlanInputs, log_mb: float, clips_mb: float) -> tuple[float, float]:
    """(days until clips stop, days until the card is full): clips and logs grow until a clip limit is hit,
    then logs alone until free space reaches ``min_free_mb``."""
    governor = config.storage.governor
    card_mb = inputs.card_gb * GB_IN_MB
    free_mb = card_mb - inputs.os_gb * GB_IN_MB
    clip_floor_mb = max(card_mb * governor.clips_min_free_percent / 100, governor.min_free_mb)
    clip_days = math.inf
    if clips_mb > 0:
        clip_days = max(0.0, free_mb - clip_floor_mb) / (log_mb + clips_mb)
        if governor.max_clips_mb:
            clip_days = min(clip_days, governor.max_clips_mb / clips_mb)
    phase_one = 0.0 if math.isinf(clip_days) else clip_days
    free_after = free_mb - phase_one * (log_mb + clips_mb)
    room = max(0.0, free_after - governor.min_free_mb)
    full = phase_one + (room / log_mb if log_mb > 0 else math.inf)
    return clip_days, full
