"""The unit-config schema: one model for every recorder profile (``firmware_configs/*.yaml``) and CLI flag.

Load configs with :func:`edge.config.loader.resolve_config`; units are in the field names (``_s``, ``_hz``, ``_w``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge.config.base import LoosePath, StrictModel, raise_problems, resolve_path
from edge.config.schedule import ScheduleConfig
from edge.config.uplink import UplinkSection
from edge.errors import EdgeError
from edge.scoring.labels import read_labels

CONFIG_SCHEMA_VERSION: Literal[1] = 1
MODEL_WINDOW_S = 10.0
"""BioLingual's input window; a bundle may declare less, never more."""
ID_PATTERN = r"^[A-Za-z0-9._-]+$"
PRECISIONS = ("fp32", "fp16", "int8")
Seconds = Annotated[float, Field(gt=0)]


class UnitSection(StrictModel):
    """Who this recorder is: ids written into every log record."""

    unit_id: Annotated[str, Field(pattern=ID_PATTERN)] = Field(default_factory=socket.gethostname)
    deployment_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$")] = ""


class AudioSection(StrictModel):
    """The microphone: chosen by name, opened at ``sample_rate`` (resampled to the model's 48 kHz)."""

    device: str = ""
    """Case-insensitive substring of the input device name; empty: the system's default input."""
    sample_rate: Annotated[int, Field(ge=8_000, le=384_000)] = 48_000
    channels: Annotated[int, Field(ge=1, le=32)] = 1
    """Channels to open."""
    channel: Annotated[int, Field(ge=0)] | None = None
    """0-based channel to analyse; None: downmix all channels."""
    highpass_hz: Annotated[float, Field(ge=0)] = 0.0
    """High-pass corner in Hz against wind and handling rumble; 0 disables it."""

    @model_validator(mode="after")
    def _consistent(self) -> AudioSection:
        problems = []
        if self.channel is not None and self.channel >= self.channels:
            problems.append(("channel", f"must be < channels ({self.channels}); channels count from 0"))
        if self.highpass_hz >= self.sample_rate / 2:
            problems.append(("highpass_hz", f"must be below half the sample rate ({self.sample_rate / 2:g} Hz)"))
        raise_problems(problems)
        return self


class ModelSection(StrictModel):
    """Which model files run, on which runtime, at which precision."""

    bundle: LoosePath
    backend: Literal["ort", "trt"] = "ort"
    precision: Annotated[list[Literal["fp32", "fp16", "int8"]], Field(min_length=1)] = ["fp32"]
    """Preference order: the first precision the bundle has is used (logged, never silent)."""
    providers: Annotated[list[str], Field(min_length=1)] = ["CPUExecutionProvider"]
    """ONNX Runtime execution providers in order (backend ``ort`` only)."""
    threads: Annotated[int, Field(ge=1)] | None = None
    max_batch: Annotated[int, Field(ge=1, le=64)] = 4
    low_memory: bool = False
    """Less peak RAM, slower windows (small boards): ONNX Runtime's memory arena and memory patterns off, one window
    per inference call, and the daemon unmaps the file pages only start-up touched."""

    @field_validator("bundle")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    @field_validator("precision")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a precision twice")
        return value


class AnalysisSection(StrictModel):
    """Windows, labels and the detector's rules."""

    window_s: Annotated[float, Field(gt=0, le=MODEL_WINDOW_S)] = MODEL_WINDOW_S
    hop_s: Seconds = 5.0
    labels: LoosePath
    score_mode: Literal["logit", "softmax"] = "logit"
    threshold: float | None = None
    """Score a label needs to start a detection; None: report the best label of every window."""
    label_thresholds: dict[str, float] = {}
    heads: list[str] = []
    """Trained heads of the bundle scored next to the labels (made by ``logs train-head --name``)."""
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    """An open detection continues while its label scores at least its threshold minus this."""
    confirm_n: Annotated[int, Field(ge=1)] = 1
    confirm_m: Annotated[int, Field(ge=1)] = 1
    """A detection needs ``confirm_n`` of ``confirm_m`` consecutive windows above threshold."""
    cooldown_s: Annotated[float, Field(ge=0)] = 0.0
    background_prompts: list[str] = []
    """Prompts for "no animal" sounds (wind, rain); scored like labels, never reported as detections."""
    privacy_prompts: list[str] = []
    """Prompts such as "human speech": any analysed window scoring at or above its threshold (confirmed or not, in
    a cooldown or not) keeps clips within ``privacy_guard_s`` of it from being saved."""
    privacy_guard_s: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("labels")
    @classmethod
    def _labels_readable(cls, value: Path, info: ValidationInfo) -> Path:
        path = resolve_path(value, info)
        if not path.is_file():
            raise ValueError(f"labels file {path} does not exist")
        try:
            read_labels(path)
        except EdgeError as e:
            raise ValueError(e.message) from e
        return path

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisSection:
        problems = []
        if self.hop_s > self.window_s:
            problems.append(("hop_s", f"must be <= window_s ({self.window_s:g}) so no audio is skipped"))
        if self.confirm_n > self.confirm_m:
            problems.append(("confirm_n", f"must be <= confirm_m ({self.confirm_m})"))
        names = {n.casefold() for n in read_labels(self.labels).names}
        for key in ("background_prompts", "privacy_prompts"):
            for prompt in getattr(self, key):
                if prompt.casefold() in names:
                    problems.append((key, f"'{prompt}' is also a label in {self.labels.name}; keep it in one place"))
        known = names | {p.casefold() for p in self.background_prompts + self.privacy_prompts}
        for label in self.label_thresholds:
            if label.casefold() not in known:
                problems.append((f"label_thresholds.{label}", f"'{label}' is not in {self.labels.name}"))
        raise_problems(problems)
        return self


class ClipPolicy(StrictModel):
    """Audio clips saved around detections."""

    mode: Literal["off", "detections"] = "off"
    pre_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    post_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    format: Literal["flac", "wav"] = "flac"
    max_per_hour: Annotated[int, Field(ge=0)] = 60
    """0: no limit."""
    max_s: Annotated[float, Field(ge=10, le=600)] = 120.0
    """Longest clip: the audio an open event may hold in memory (16-bit, 96 KB per second at 48 kHz); a longer
    event's clip keeps its last ``max_s`` seconds and says how much of its start is missing."""


class Governor(StrictModel):
    """Free-space limits that protect the card (and the OS on it)."""

    min_free_mb: Annotated[float, Field(ge=0)] = 512.0
    """Below this, only health records are written."""
    clips_min_free_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    """Below this share of the volume free, clips stop (detections continue)."""
    max_clips_mb: Annotated[float, Field(ge=0)] = 0.0
    """Cap on the clips folder; 0: no cap."""


class StorageSection(StrictModel):
    log_dir: LoosePath = Field(default=Path("logs"), validate_default=True)
    fallback_dir: LoosePath = Field(default=Path("unwritten"), validate_default=True)
    """Folder off the card (the unit's own disk) for rows that did not fit on a full card at stop."""
    embeddings: Literal["fp16", "int8", "off"] = "fp16"
    """Every analysed window's embedding on the card (≈ 1 KiB fp16, ≈ 0.5 KiB int8): re-score and search later."""

    @field_validator("embeddings", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false
    clips: ClipPolicy = ClipPolicy()
    governor: Governor = Governor()

    @field_validator("log_dir", "fallback_dir")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


class HealthSection(StrictModel):
    """Heartbeat and the watchdog on the data (not just the process)."""

    heartbeat_s: Seconds = 60.0
    watchdog_s: Seconds = 120.0
    """systemd WatchdogSec: the daemon pings only while windows are being analysed."""
    no_audio_s: Seconds = 10.0
    flatline_s: Seconds = 60.0
    stall_s: Seconds = 60.0
    thermal_paths: list[LoosePath] = []
    temp_warn_c: float = 75.0
    temp_fail_c: float = 90.0

    @model_validator(mode="after")
    def _ordered(self) -> HealthSection:
        problems = []
        if self.temp_fail_c <= self.temp_warn_c:
            problems.append(("temp_fail_c", f"must be above temp_warn_c ({self.temp_warn_c:g})"))
        if self.watchdog_s <= self.stall_s:
            problems.append(("watchdog_s", f"must be > stall_s ({self.stall_s:g}) so the daemon recovers on its "
                                           "own before systemd restarts it"))
        raise_problems(problems)
        return self


class PowerSection(StrictModel):
    """Power mode and the draw figures ``plan`` uses (measure them with a USB power meter)."""

    nvpmodel_mode: Annotated[int, Field(ge=0)] | None = None
    """Jetson ``nvpmodel -m`` id the unit should run in; None: not a Jetson or leave as is."""
    jetson_clocks: bool = False
    """Run ``jetson_clocks`` at start (clocks pinned at maximum); the outcome is in the boot record."""
    off_w: Annotated[float, Field(ge=0)] = 1.0
    """Whole-unit draw while scheduled off (stream closed), in watts."""
    listen_w: Annotated[float, Field(ge=0)] = 2.0
    """Draw while capturing, between inferences."""
    infer_w: Annotated[float, Field(ge=0)] = 4.0
    """Draw while running inference."""

    @model_validator(mode="after")
    def _ordered(self) -> PowerSection:
        raise_problems([("infer_w", f"must be >= listen_w ({self.listen_w:g})")] if self.infer_w < self.listen_w
                       else [])
        return self


class UnitConfig(StrictModel):
    """Everything a recorder unit needs; see ``firmware_configs/*.yaml`` for commented examples."""

    config_version: Literal[1] = CONFIG_SCHEMA_VERSION
    unit: UnitSection = UnitSection()
    audio: AudioSection = AudioSection()
    model: ModelSection
    analysis: AnalysisSection
    schedule: ScheduleConfig = ScheduleConfig()
    storage: StorageSection = StorageSection()
    health: HealthSection = HealthSection()
    power: PowerSection = PowerSection()
    uplink: UplinkSection = UplinkSection()

    @model_validator(mode="after")
    def _across_sections(self) -> UnitConfig:
        problems = []
        if self.health.stall_s <= self.analysis.window_s:
            problems.append(("health.stall_s", f"must be > analysis.window_s ({self.analysis.window_s:g}): the "
                                               "first window takes that long to fill"))
        if self.model.backend == "trt" and self.model.providers != ["CPUExecutionProvider"]:
            problems.append(("model.providers", "only used with backend: ort"))
        if self.uplink.alerts:
            names = {n.casefold() for n in read_labels(self.analysis.labels).names} | set(self.analysis.heads)
            problems += [(f"uplink.alerts.{i}.label", f"'{rule.label}' is not in {self.analysis.labels.name}")
                         for i, rule in enumerate(self.uplink.alerts)
                         if rule.label.casefold() not in names and rule.label not in self.analysis.heads]
        raise_problems(problems)
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        """Plain data (paths as strings) in schema order, for ``config show``."""
        return self.model_dump(mode="json")
