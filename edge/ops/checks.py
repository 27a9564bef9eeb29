"""On-site checks of a unit: bundle, model, microphone, disk, clock, temperature, schedule -> PASS/WARN/FAIL.

Each check is a function returning one :class:`CheckRow` and never raises for a problem it is meant to
find. The microphone check takes a capture callable so any capture backend can plug in.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import subprocess
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from edge.audio.windowing import Window
from edge.card.log_dir import log_dir_problem
from edge.config.loader import UnitConfig
from edge.config.schedule import build_schedule
from edge.errors import EdgeError
from edge.model.bundle import Bundle, open_bundle
from edge.ops.setup import choose_precision, stages_for
from edge.stream.pipeline import score_windows
from edge.uplink.link import INSTALL_HINT, Link, link_settings, paho_available
from edge.uplink.messages import UplinkError
from edge.uplink.outbox import CardOutbox, Cursor

MicCapture = Callable[[], tuple[int, np.ndarray]]
"""Opens the configured microphone for a few seconds: returns (actual rate in Hz, float samples (n,) or (n, ch))."""

TEST_SIGNAL_DBFS = -30.0
TEST_SIGNAL_SEED = 0
CLIP_LEVEL = 0.999
"""|sample| at or above this counts as clipped (full scale is 1.0)."""
CLIPPED_FRACTION_WARN = 0.001
FLATLINE_PEAK_TO_PEAK = 1e-6
"""Less variation than this over the whole capture is digital silence (muted, unplugged, dead preamp)."""
QUIET_DBFS = -70.0
"""RMS below this is suspiciously quiet even for a calm night: gain too low?"""
MIN_PLAUSIBLE_YEAR = 2024
"""A clock before this was never set (a Pi without RTC boots at its last shutdown time or 1970)."""
CLOCK_QUERY_TIMEOUT_S = 5
UPLINK_CHECK_S = 5.0
"""How long ``check`` waits for the broker's answer."""
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
MILLIDEGREES_PER_DEGREE = 1000


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class CheckRow:
    name: str
    status: Status
    detail: str


def dbfs(value: float) -> float:
    """Amplitude relative to full scale (1.0) in dB; -inf for zero."""
    return 20 * math.log10(value) if value > 0 else -math.inf


def check_bundle(config: UnitConfig) -> tuple[CheckRow, Bundle | None]:
    """Every bundle file present with the sha256 the manifest lists."""
    try:
        bundle = open_bundle(config.model.bundle, verify=True)
    except EdgeError as e:
        return CheckRow("bundle", Status.FAIL, e.message), None
    files = len(bundle.manifest.files)
    return CheckRow("bundle", Status.PASS, f"{bundle.root}: {files} files, checksums match"), bundle


def check_model(config: UnitConfig, bundle: Bundle | None) -> CheckRow:
    """Load the backend at the preferred precision the bundle has and score one test window."""
    if bundle is None:
        return CheckRow("model", Status.SKIP, "bundle did not pass")
    model = config.model
    try:
        precision = choose_precision(config, bundle)
        stages = stages_for(config, bundle, precision)
        frontend = bundle.manifest.frontend
        rng = np.random.default_rng(TEST_SIGNAL_SEED)
        amplitude = 10 ** (TEST_SIGNAL_DBFS / 20)
        samples = (amplitude * rng.standard_normal(frontend.window_samples)).astype(np.float32)
        started = time.perf_counter()
        scores = score_windows(stages, [Window(0, samples)])
        elapsed_ms = (time.perf_counter() - started) * 1000
    except EdgeError as e:  # with its fix: a row that only says what is wrong leaves the technician stuck
        return CheckRow("model", Status.FAIL, f"{e.message}; {e.hint}" if e.hint else e.message)
    if not np.all(np.isfinite(scores.score)):
        return CheckRow("model", Status.FAIL, f"{model.backend} {precision}: scores are not finite (NaN/inf)")
    labels = len(stages.scorer.label_set.names)
    return CheckRow("model", Status.PASS, f"{model.backend} {precision}: one window in {elapsed_ms:.0f} ms "
                                          f"(first call, includes warm-up), {labels} labels scored")


def check_microphone(capture: MicCapture | None, config: UnitConfig) -> CheckRow:
    """Real rate and level of a short capture: FAIL on no data, NaN or flatline; WARN on clipping or odd rate."""
    if capture is None:
        return CheckRow("microphone", Status.SKIP, "no capture backend")
    try:
        rate, samples = capture()
    except EdgeError as e:
        return CheckRow("microphone", Status.FAIL, e.message)
    audio = np.asarray(samples, dtype=np.float64)
    if audio.ndim == 2:
        channel = config.audio.channel
        audio = audio[:, channel] if channel is not None and channel < audio.shape[1] else audio.mean(axis=1)
    if audio.size == 0:
        return CheckRow("microphone", Status.FAIL, f"no samples arrived at {rate} Hz")
    if not np.all(np.isfinite(audio)):
        return CheckRow("microphone", Status.FAIL, "samples contain NaN/inf")
    seconds = audio.size / rate
    if float(np.ptp(audio)) < FLATLINE_PEAK_TO_PEAK:
        return CheckRow("microphone", Status.FAIL, f"{rate} Hz, {seconds:.1f} s of flatline (digital silence): "
                                                   "muted, unplugged or wrong device?")
    rms = dbfs(float(np.sqrt(np.mean(audio**2))))
    peak = dbfs(float(np.max(np.abs(audio))))
    clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL))
    detail = (f"{rate} Hz, {seconds:.1f} s, RMS {rms:.1f} dBFS, peak {peak:.1f} dBFS, "
              f"clipped {clipped * 100:.2f}%")
    notes = []
    if rate != config.audio.sample_rate:
        notes.append(f"config asks {config.audio.sample_rate} Hz (will be resampled)")
    if clipped > CLIPPED_FRACTION_WARN:
        notes.append("clipping: lower the gain")
    if rms < QUIET_DBFS:
        notes.append("very quiet: check gain and cable")
    status = Status.WARN if notes else Status.PASS
    return CheckRow("microphone", status, "; ".join([detail, *notes]))


def check_storage(config: UnitConfig) -> CheckRow:
    """The log folder exists and is writable (FAIL otherwise: an unmounted card), then its free space."""
    log_dir = config.storage.log_dir
    problem = log_dir_problem(log_dir)
    if problem is not None:
        return CheckRow("storage", Status.FAIL, problem)
    probe = log_dir
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    percent = 100 * usage.free / usage.total if usage.total else 0.0
    detail = f"{log_dir}: {usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB ({percent:.0f}%)"
    governor = config.storage.governor
    if free_mb < governor.min_free_mb:
        return CheckRow("storage", Status.FAIL, f"{detail}; below min_free_mb ({governor.min_free_mb:g})")
    if percent < governor.clips_min_free_percent:
        return CheckRow("storage", Status.WARN, f"{detail}; clips stop below {governor.clips_min_free_percent:g}%")
    return CheckRow("storage", Status.PASS, detail)


def read_sync_state() -> str | None:
    """``"yes"``/``"no"`` from systemd (timedatectl, else the timesyncd flag file); None when unknown."""
    try:
        done = subprocess.run(["timedatectl", "show", "--property=NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=CLOCK_QUERY_TIMEOUT_S, check=False)
        if done.returncode == 0 and done.stdout.strip() in ("yes", "no"):
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "yes" if TIMESYNC_FLAG.exists() else None


def check_clock(now: dt.datetime, sync_state: str | None) -> CheckRow:
    """FAIL for a clock that was never set; WARN when it is not (known to be) synchronised."""
    shown = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    if now.year < MIN_PLAUSIBLE_YEAR:
        return CheckRow("clock", Status.FAIL, f"{shown}: the clock was never set (connect to NTP once or fit an RTC)")
    if sync_state == "yes":
        return CheckRow("clock", Status.PASS, f"{shown}, synchronised")
    if sync_state == "no":
        return CheckRow("clock", Status.WARN, f"{shown}, NOT synchronised: timestamps may drift")
    return CheckRow("clock", Status.WARN, f"{shown}, sync state unknown (no timedatectl/timesyncd)")


def check_temperature(config: UnitConfig) -> CheckRow:
    """Hottest readable thermal sensor against ``temp_warn_c``/``temp_fail_c``."""
    health = config.health
    if not health.thermal_paths:
        return CheckRow("temperature", Status.SKIP, "no thermal_paths configured")
    readings: list[tuple[float, Path]] = []
    for path in health.thermal_paths:
        try:
            readings.append((int(path.read_text().strip()) / MILLIDEGREES_PER_DEGREE, path))
        except (OSError, ValueError):
            continue
    if not readings:
        shown = ", ".join(map(str, health.thermal_paths))
        return CheckRow("temperature", Status.WARN, f"no sensor readable ({shown})")
    celsius, hottest = max(readings)
    detail = f"{celsius:.1f} C ({hottest})"
    if celsius >= health.temp_fail_c:
        return CheckRow("temperature", Status.FAIL, f"{detail} >= {health.temp_fail_c:g} C: add cooling or shade")
    if celsius >= health.temp_warn_c:
        return CheckRow("temperature", Status.WARN, f"{detail} >= {health.temp_warn_c:g} C")
    return CheckRow("temperature", Status.PASS, detail)


def check_schedule(config: UnitConfig, now: dt.datetime) -> CheckRow:
    """Whether the unit listens now and when that changes, in the schedule's local time."""
    schedule = build_schedule(config.schedule)
    state = "on" if schedule.is_on(now) else "off"
    change = schedule.next_change(now)
    if change is None:
        return CheckRow("schedule", Status.PASS, f"{config.schedule.mode}: {state}, no change within a year")
    local = change.astimezone(zoneinfo.ZoneInfo(config.schedule.timezone)).strftime("%Y-%m-%d %H:%M %Z")
    return CheckRow("schedule", Status.PASS, f"{config.schedule.mode}: {state} now, until {local}")


def check_uplink(config: UnitConfig, timeout_s: float = UPLINK_CHECK_S) -> CheckRow:
    """The broker answers with these credentials and certificates; what the card holds that it has not acked."""
    section = config.uplink
    if not section.enabled:
        return CheckRow("uplink", Status.SKIP, "off (no uplink.url)")
    if not paho_available():
        return CheckRow("uplink", Status.WARN, f"unavailable: paho-mqtt is not installed, the unit runs without it; "
                                               f"{INSTALL_HINT}")
    log_dir = Path(config.storage.log_dir)
    backlog = ""
    if log_dir.is_dir():
        waiting = CardOutbox(log_dir, section.send).backlog_bytes(Cursor(log_dir).acked)
        backlog = f"; {waiting / 1024:.1f} KiB on the card not yet acknowledged"
    try:
        # its own client id: the same id as the running daemon's would make the broker drop the daemon
        link = Link(link_settings(section, f"biolingual-check-{config.unit.unit_id}"))
        link.connect(timeout_s)
        link.close()
    except UplinkError as e:
        return CheckRow("uplink", Status.FAIL, f"{e.message} ({e.hint}){backlog}")
    user = link.settings.username
    return CheckRow("uplink", Status.PASS, f"{link.settings.where} answered{f' as {user}' if user else ''}{backlog}")


def run_checks(config: UnitConfig, capture: MicCapture | None = None,
               now: dt.datetime | None = None) -> list[CheckRow]:
    """All checks in the order a technician fixes things."""
    now = now or dt.datetime.now(dt.timezone.utc)
    bundle_row, bundle = check_bundle(config)
    return [
        bundle_row,
        check_model(config, bundle),
        check_microphone(capture, config),
        check_storage(config),
        check_clock(now, read_sync_state()),
        check_temperature(config),
        check_schedule(config, now),
        check_uplink(config),
    ]
