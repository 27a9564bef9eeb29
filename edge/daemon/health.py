"""Liveness on the data (flatline, clipping) and process facts for the heartbeat (RSS, temperature)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.chunk import AudioChunk

FLATLINE_S = 10.0
"""Digital silence (every sample exactly equal) for this long is reported: a dead or muted microphone."""
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.01
"""Share of samples at full scale within a second above which the input is reported as clipping."""
THERMAL_ZONES = Path("/sys/class/thermal")
PROC_STATUS = Path("/proc/self/status")


class SignalMonitor:
    """Reports transitions into and out of flatline and clipping, one event each, from the sample stream."""

    def __init__(self, sample_rate: int, flatline_s: float = FLATLINE_S) -> None:
        self.sample_rate = sample_rate
        self.flatline_samples = round(flatline_s * sample_rate)
        self.reset()

    def reset(self) -> None:
        self._flat_run = 0
        self._flat = False
        self._clipping = False

    def update(self, chunk: AudioChunk) -> list[tuple[str, dict[str, Any]]]:
        """Events (kind, fields) caused by this chunk."""
        events: list[tuple[str, dict[str, Any]]] = []
        samples = chunk.samples
        if samples.shape[0] == 0:
            return events
        constant = bool(samples.min() == samples.max())
        self._flat_run = self._flat_run + samples.shape[0] if constant else 0
        if not self._flat and self._flat_run >= self.flatline_samples:
            self._flat = True
            events.append(("flatline", {"seconds": round(self._flat_run / self.sample_rate, 1)}))
        elif self._flat and not constant:
            self._flat = False
            events.append(("flatline_end", {}))
        clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
        if clipped > CLIP_FRACTION and not self._clipping:
            self._clipping = True
            events.append(("clipping", {"fraction": round(clipped, 4)}))
        elif self._clipping and clipped <= CLIP_FRACTION / 10:
            self._clipping = False
            events.append(("clipping_end", {}))
        return events


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux: VmHWM, which unlike ru_maxrss does not carry
    over the parent's peak across fork/exec)."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def temperatures_c(root: Path = THERMAL_ZONES) -> dict[str, float]:
    """Readable thermal zones (Jetson, Raspberry Pi) in degrees Celsius; empty where there are none."""
    readings: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip()
            readings[name] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return readings


def read_temperatures(paths: tuple[Path, ...]) -> list[float]:
    """Degrees Celsius from configured sensor files (millidegrees); unreadable ones are skipped."""
    readings = []
    for path in paths:
        try:
            readings.append(int(path.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return readings


def process_health(thermal_paths: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Peak RSS and the hottest sensor (configured paths, else every thermal zone) for the heartbeat."""
    temps = read_temperatures(thermal_paths) if thermal_paths else list(temperatures_c().values())
    return {"peak_rss_mb": round(peak_rss_mb(), 1), "temperature_c": max(temps) if temps else None}
