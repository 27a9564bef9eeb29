"""A resolved unit config -> wired components: stages, detector, source, card log, daemon."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.audio.file_stream import DEFAULT_CHUNK_SAMPLES, FileStreamSource
from edge.audio.mic import MicrophoneSource
from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.embeddings import embedding_spec
from edge.card.governor import StoragePolicy
from edge.card.log_dir import require_log_dir
from edge.config.schedule import build_schedule
from edge.config.schema import UnitConfig
from edge.daemon.power import apply_power
from edge.daemon.runner import Daemon, DaemonOptions, Source
from edge.errors import BundleError, ConfigError
from edge.model.bundle import Bundle, open_bundle
from edge.model.precision_gate import model_key
from edge.scoring.labels import LabelList, read_labels
from edge.stream.detector import DetectorOptions, EventDetector
from edge.stream.pipeline import Stages, build_stages, scoring_provenance
from edge.uplink.attach import with_uplink

log = logging.getLogger(__name__)

MIB = 1 << 20
RING_WINDOWS = 3
"""Ring buffer capacity in windows (at least 2 are needed so capture never waits for inference)."""
UNASSIGNED_DEPLOYMENT = "unassigned"
LAG_BOUND_WINDOWS = 1.5
"""Backlog (in windows) beyond which the hop is widened; the ring holds RING_WINDOWS before audio is lost."""
CLOCK_SYNC_FROM_SYSTEMD = {"yes": "ntp", "no": "unsynchronised"}


@dataclass(frozen=True)
class InputOptions:
    """Stream a recording instead of the microphone (demos, tests, benchmarks)."""

    path: Path
    fast: bool = False
    """As fast as possible instead of real-time pace."""
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES


def labels_with_prompts(config: UnitConfig) -> LabelList:
    """The user's labels followed by the background and privacy prompts (all need embeddings)."""
    labels = read_labels(config.analysis.labels)
    prompts = tuple(config.analysis.background_prompts + config.analysis.privacy_prompts)
    return LabelList(labels.names + prompts, labels.scientific_names + ("",) * len(prompts))


def choose_precision(config: UnitConfig, bundle: Bundle) -> str:
    """The first precision of the preference list whose model the bundle has for the configured backend.

    Looked up by manifest key (``model_key``): the trt backend's ``int8`` is the ``trt-int8`` engine, never
    the ONNX Runtime ``int8`` file.
    """
    backend = config.model.backend
    for precision in config.model.precision:
        if model_key(backend, precision) in bundle.manifest.models:
            return precision
    wanted = ", ".join(model_key(backend, p) for p in config.model.precision)
    raise BundleError(f"bundle {bundle.root} has none of {wanted} for backend {backend} "
                      f"(it has {', '.join(bundle.manifest.models) or 'none'})",
                      "build the missing engine (`biolingual-export trt`) or model, or change model.precision"
                      if backend == "trt" else "export the missing precision or change model.precision")


def stages_for(config: UnitConfig, bundle: Bundle, precision: str, force_precision: bool = False) -> Stages:
    """Frontend, backend, scorer and selector for this unit."""
    return build_stages(bundle, labels_with_prompts(config), str(config.analysis.labels), precision=precision,
                        backend=config.model.backend, threads=config.model.threads,
                        providers=tuple(config.model.providers), score_mode=config.analysis.score_mode,
                        highpass_hz=config.audio.highpass_hz, force_precision=force_precision,
                        low_memory=config.model.low_memory, heads=tuple(config.analysis.heads))


def detector_options(config: UnitConfig, rate: int) -> DetectorOptions:
    analysis = config.analysis
    if analysis.threshold is None:
        raise ConfigError("no detection threshold set (analysis.threshold)",
                          "pass --threshold (score units: cosine × the bundle's logit scale) or set it in the config")
    return DetectorOptions(enter=analysis.threshold, exit=analysis.threshold - analysis.hysteresis,
                           per_label_enter=dict(analysis.label_thresholds), confirm_n=analysis.confirm_n,
                           confirm_m=analysis.confirm_m, cooldown_samples=round(analysis.cooldown_s * rate))


def storage_policy(config: UnitConfig) -> StoragePolicy:
    """Clip thresholds: stop clips below ``clips_min_free_percent`` of the card, thin below ``min_free_mb``."""
    from shutil import disk_usage

    governor = config.storage.governor
    folder = Path(config.storage.log_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    total = disk_usage(folder).total
    stop = max(int(total * governor.clips_min_free_percent / 100), int(governor.min_free_mb * MIB))
    clips = config.storage.clips
    return StoragePolicy(stop_clips_below_bytes=stop, thin_clips_below_bytes=int(governor.min_free_mb * MIB),
                         min_free_bytes=int(governor.min_free_mb * MIB), clip_format=clips.format,
                         max_clips_per_hour=clips.max_per_hour, max_clips_bytes=int(governor.max_clips_mb * MIB),
                         fallback_dir=Path(config.storage.fallback_dir))


def boot_info(config: UnitConfig, bundle: Bundle, labels: LabelList, precision: str,
              power: dict[str, str] | None = None, scoring: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings that explain every row of this run (no timestamps: equal settings, equal hash).

    ``config`` is the whole resolved unit config, so the desk can name the setting that differs between units.
    """
    resolved = json.dumps(config.to_yaml_dict(), sort_keys=True, default=str)
    label_sets = [s for s in bundle.manifest.label_sets.values() if set(s.names) & set(labels.names)]
    return {
        "config_hash": hashlib.sha256(resolved.encode()).hexdigest()[:16],
        "bundle_sha256": dict(bundle.manifest.files),
        "model": f"{bundle.manifest.model_id}@{bundle.manifest.model_revision}",
        "labels_hash": labels.key,
        "labels": list(labels.names),
        "templates": sorted({t for s in label_sets for t in s.templates}),
        "precision": precision,
        "backend": config.model.backend,
        "thresholds": {"global": config.analysis.threshold, **config.analysis.label_thresholds},
        **(scoring or {}),
        "hysteresis": config.analysis.hysteresis,
        "confirm": f"{config.analysis.confirm_n}/{config.analysis.confirm_m}",
        "window_s": config.analysis.window_s,
        "hop_s": config.analysis.hop_s,
        "band_hz": [bundle.manifest.frontend.f_min, bundle.manifest.frontend.f_max],
        "runtime": {"biolingual-edge": __version__, "python": platform.python_version()},
        "power": power or {},
        "config": config.model_dump(mode="json"),
    }


def build_source(config: UnitConfig, rate: int, input_options: InputOptions | None) -> Source:
    if input_options is not None:
        return FileStreamSource(input_options.path, rate, realtime=not input_options.fast,
                                chunk_samples=input_options.chunk_samples)
    audio = config.audio
    # 48 kHz (the default) is a preference with fallback to the device's native rate; any other rate is strict.
    requested = None if audio.sample_rate == rate else audio.sample_rate
    return MicrophoneSource(audio.device or None, rate, ring_seconds=RING_WINDOWS * config.analysis.window_s,
                            rate=requested, channel=audio.channel, channels=audio.channels)


def build_daemon(config: UnitConfig, input_options: InputOptions | None = None,
                 clock_sync: str | None = None, force_precision: bool = False, create_log_dir: bool = True) -> Daemon:
    """Open bundle, labels and backend, validate the detector rules, and wire the daemon.

    The log folder must exist and be writable (an unmounted card must not start a recorder writing to the
    system disk); ``create_log_dir`` makes a missing one first (a folder named on the command line).
    """
    require_log_dir(Path(config.storage.log_dir), create_log_dir)
    bundle = open_bundle(config.model.bundle, verify="on_read")  # hash what this run loads, not every precision
    precision = choose_precision(config, bundle)
    rate = bundle.manifest.frontend.sampling_rate
    window = round(config.analysis.window_s * rate)
    hop = round(config.analysis.hop_s * rate)
    options = detector_options(config, rate)
    options.validate(window, hop)
    labels = labels_with_prompts(config)
    stages = stages_for(config, bundle, precision, force_precision)
    # fitted thresholds from the bundle and heads' defaults, unless the config sets a label's own
    options = dataclasses.replace(options, per_label_enter={**stages.selector.per_label, **options.per_label_enter})
    options.validate(window, hop)
    log.info("model %s, %s precision on %s", bundle.manifest.model_id, precision, config.model.backend)
    health = config.health
    clips = config.storage.clips
    daemon_options = DaemonOptions(
        window_samples=window, hop_samples=hop, sample_rate=rate, max_batch=config.model.max_batch,
        heartbeat_s=health.heartbeat_s, no_data_s=health.no_audio_s, stall_s=health.stall_s,
        lag_bound_s=max(LAG_BOUND_WINDOWS * config.analysis.window_s, health.no_audio_s),
        flatline_s=health.flatline_s, save_clips=clips.mode == "detections", clip_pre_roll_s=clips.pre_s,
        clip_post_roll_s=clips.post_s, clip_max_s=clips.max_s,
        background_labels=tuple(config.analysis.background_prompts),
        privacy_labels=tuple(config.analysis.privacy_prompts), privacy_guard_s=config.analysis.privacy_guard_s,
        is_file=input_options is not None, thermal_paths=tuple(health.thermal_paths),
        clock_sync=clock_sync or "unsynchronised", drop_startup_pages=config.model.low_memory)
    identity = UnitIdentity(config.unit.unit_id, config.unit.deployment_id or UNASSIGNED_DEPLOYMENT)
    sink = CardLog(Path(config.storage.log_dir), identity, rate,
                   boot_info(config, bundle, labels, precision, apply_power(config.power),
                             scoring_provenance(bundle, tuple(config.analysis.heads), options.per_label_enter,
                                                stages.selector.confidence, config.analysis.threshold)),
                   storage_policy(config),
                   embeddings=embedding_spec(bundle, model_key(config.model.backend, precision),
                                             config.storage.embeddings),
                   source=None if input_options is None else input_options.path)
    run_log = with_uplink(config, sink, stages.selector.confidence)
    schedule = None if input_options is not None else build_schedule(config.schedule)

    def rebuild() -> Stages:
        return stages_for(config, bundle, precision, force_precision)

    detector = EventDetector(stages.scorer.label_set.names, options)  # the list, its prompts, then any heads
    return Daemon(build_source(config, rate, input_options), rebuild, detector, run_log, daemon_options,
                  schedule=schedule, stages=stages)
