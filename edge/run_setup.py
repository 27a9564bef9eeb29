"""Turning the daemon's settings (flags or unit config) into wired components."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edge.audio.file_stream import DEFAULT_CHUNK_SAMPLES, FileStreamSource
from edge.audio.mic import MicrophoneSource
from edge.bundle import open_bundle
from edge.daemon import Daemon, DaemonOptions, Source
from edge.detect import DetectorOptions, EventDetector
from edge.errors import ConfigError
from edge.labels import read_labels
from edge.pipeline import Stages, build_stages
from edge.sinks.interim import JsonlRunLog

RING_WINDOWS = 3
"""Ring buffer capacity in windows (the issue asks for at least 2)."""


@dataclass(frozen=True)
class RunSettings:
    """Everything ``biolingual-edge run`` needs; durations in seconds."""

    labels: Path
    bundle: Path
    log_dir: Path
    threshold: float | None = None
    exit_threshold: float | None = None
    per_label_threshold: dict[str, float] = dataclasses.field(default_factory=dict)
    confirm_n: int = 1
    confirm_m: int = 1
    cooldown_s: float = 0.0
    window_s: float = 10.0
    hop_s: float = 5.0
    precision: str = "fp32"
    backend: str = "ort"
    threads: int | None = None
    max_batch: int = 4
    score_mode: str = "logit"
    device: str | None = None
    rate: int | None = None
    channel: int | None = None
    input_file: Path | None = None
    fast: bool = False
    chunk_samples: int | None = None
    heartbeat_s: float = 60.0
    no_data_s: float = 5.0
    lag_bound_s: float = 30.0
    save_clips: bool = False
    privacy_labels: tuple[str, ...] = ()


def _timing(settings: RunSettings, rate: int, max_window_s: float) -> tuple[int, int]:
    if not 0 < settings.window_s <= max_window_s:
        raise ConfigError(f"window {settings.window_s:g} s is outside 0..{max_window_s:g} s",
                          f"the model sees at most {max_window_s:g} s at once")
    if not 0 < settings.hop_s <= settings.window_s:
        raise ConfigError(f"hop {settings.hop_s:g} s must be > 0 and <= window ({settings.window_s:g} s)",
                          "use a hop no longer than the window so no audio is skipped")
    return round(settings.window_s * rate), round(settings.hop_s * rate)


def build_daemon(settings: RunSettings) -> Daemon:
    """Open the bundle, labels, backend and source; validate detector rules against window/hop."""
    if settings.threshold is None:
        raise ConfigError("no detection threshold set",
                          "pass --threshold (score units: cosine × the bundle's logit scale) or set it in the config")
    bundle = open_bundle(settings.bundle)
    params = bundle.manifest.frontend
    rate = params.sampling_rate
    window, hop = _timing(settings, rate, params.max_length_s)
    labels = read_labels(settings.labels)
    unknown = [n for n in (*settings.per_label_threshold, *settings.privacy_labels) if n not in labels.names]
    if unknown:
        raise ConfigError(f"threshold/privacy label(s) not in {settings.labels}: {', '.join(unknown)}",
                          "use label names exactly as in the label file")
    detector_options = DetectorOptions(enter=settings.threshold, exit=settings.exit_threshold,
                                       per_label_enter=settings.per_label_threshold, confirm_n=settings.confirm_n,
                                       confirm_m=settings.confirm_m, cooldown_samples=round(settings.cooldown_s * rate))
    detector_options.validate(window, hop)

    def stages_factory() -> Stages:
        return build_stages(bundle, labels, str(settings.labels), precision=settings.precision,
                            backend=settings.backend, threads=settings.threads, score_mode=settings.score_mode)

    source: Source
    if settings.input_file is not None:
        source = FileStreamSource(settings.input_file, rate, realtime=not settings.fast,
                                  chunk_samples=settings.chunk_samples or DEFAULT_CHUNK_SAMPLES)
    else:
        source = MicrophoneSource(settings.device, rate, ring_seconds=RING_WINDOWS * settings.window_s,
                                  rate=settings.rate, channel=settings.channel)
    options = DaemonOptions(window_samples=window, hop_samples=hop, sample_rate=rate, max_batch=settings.max_batch,
                            heartbeat_s=settings.heartbeat_s, no_data_s=settings.no_data_s,
                            lag_bound_s=settings.lag_bound_s, save_clips=settings.save_clips,
                            privacy_labels=settings.privacy_labels, is_file=settings.input_file is not None)
    detector = EventDetector(labels.names, detector_options)
    sink = JsonlRunLog(settings.log_dir, rate)
    return Daemon(source, stages_factory, detector, sink, options)


def parse_confirm(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3)."""
    try:
        n, m = (int(part) for part in text.split("/"))
    except ValueError as e:
        raise ConfigError(f"--confirm {text!r} is not N/M", "write e.g. 2/3 (2 hits in the last 3 windows)") from e
    return n, m
