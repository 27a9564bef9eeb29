"""A small multi-unit season written through the real card writer: schedules, a gap, a crash, clips, time zones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import soundfile as sf

from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.governor import StoragePolicy
from edge.stream.detector import DetectionEvent
from tests.conftest import SHARED_AUDIO

RATE = 48_000
HOUR = 3600 * RATE
WINDOW = 10 * RATE
DAY0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
DAYS = 3
SPECIES_HOURS = {"toad": range(20, 24), "barred owl": range(0, 4), "wood frog": range(0, 24)}
"""Local hours each species calls in (wood frog: all day, a little)."""
CLIP_AUDIO = SHARED_AUDIO / "kahst__BirdNET-Analyzer" / "soundscape.wav"


def config(zone: str | None, threshold: float = 0.3) -> dict[str, Any]:
    resolved: dict[str, Any] = {"analysis": {"threshold": threshold, "hop_s": 5.0}}
    if zone is not None:
        resolved["schedule"] = {"mode": "daily", "timezone": zone}
    return {"config_hash": f"cfg-{zone}-{threshold}", "config": resolved}


class UnitWriter:
    """Drives one unit's card the way the daemon does: streams, effort, detections, heartbeats, events."""

    def __init__(self, root: Path, unit: str, zone: str | None, clips: bool, threshold: float = 0.3) -> None:
        self.root, self.unit, self.clips = root, unit, clips
        self.tz = ZoneInfo(zone or "UTC")
        self.info = config(zone, threshold)
        self.rng = np.random.default_rng(sum(map(ord, unit)))
        self.audio = sf.read(CLIP_AUDIO, dtype="float32")[0] if clips else None

    def boot(self, at: datetime) -> CardLog:
        return CardLog(self.root, UnitIdentity(self.unit, "marsh-2024"), RATE, self.info,
                       StoragePolicy(0, 0), boot_id=f"{at:%Y%m%dT%H%M%SZ}-{self.unit[-2:]}0000",
                       wall_clock=lambda: at)

    def listen(self, log: CardLog, sample: int, start: datetime, hours: int) -> int:
        """``hours`` of analysed audio from ``start`` (stream sample ``sample``); returns the end sample."""
        for h in range(hours):
            begin = sample + h * HOUR
            log.effort(begin, begin + HOUR)
            local_hour = (start + timedelta(hours=h)).astimezone(self.tz).hour
            for species, calling in SPECIES_HOURS.items():
                n = int(self.rng.poisson(6 if species != "wood frog" else 0.7)) if local_hour in calling else 0
                for offset in sorted(self.rng.choice(HOUR // WINDOW, size=n, replace=False)):
                    at = begin + int(offset) * WINDOW
                    event = DetectionEvent(at, at + WINDOW, species, float(self.rng.uniform(0.3, 0.9)),
                                           0.1, at, 1)
                    log.detections([event])
                    if self.audio is not None and self.rng.random() < 0.3:
                        log.save_clip(event, self.audio[:WINDOW], at)
            log.health({"temperature_c": 20.0 + 10 * np.sin(local_hour / 24 * 2 * np.pi)})
            log.flush()
        return sample + hours * HOUR


def nightly_unit(root: Path, unit: str, zone: str, clips: bool = False) -> None:
    """Listens 18:00-06:00 local each night, scheduled off by day, one clean boot."""
    writer = UnitWriter(root, unit, zone, clips)
    first_on = datetime(2024, 5, 1, 18, tzinfo=writer.tz).astimezone(timezone.utc)
    log = writer.boot(first_on)
    log.event("start")
    sample = 0
    for night in range(DAYS - 1):
        on = first_on + timedelta(days=night)
        log.open_stream(on, sample, "ntp")
        if night:
            log.event("scheduled_on", sample=sample)
        sample = writer.listen(log, sample, on, 12)
        log.event("scheduled_off", sample=sample)
        sample += 12 * HOUR
    log.event("stop", exit_code=0)
    log.close()


def always_on_unit(root: Path, unit: str, zone: str | None, crash: bool, gap: bool, clips: bool = False,
                   threshold: float = 0.3) -> None:
    """Listens around the clock; optionally loses its microphone for 2 h, and crashes for 2 h on day 2."""
    writer = UnitWriter(root, unit, zone, clips, threshold)
    log = writer.boot(DAY0)
    log.event("start")
    log.open_stream(DAY0, 0, "ntp")
    sample = writer.listen(log, 0, DAY0, 30)
    if gap:
        log.event("stream_lost", sample=sample)
        log.event("gap", sample=sample, end_sample=sample + 2 * HOUR, seconds=7200.0)
        log.open_stream(DAY0 + timedelta(hours=32), sample + 2 * HOUR, "ntp")
        sample = writer.listen(log, sample + 2 * HOUR, DAY0 + timedelta(hours=32), 4)
    hours_done = 36 if gap else 30
    if crash:
        log.flush()  # killed here: no stop, no log_close, segments left open
        restart = DAY0 + timedelta(hours=hours_done + 2)
        log = writer.boot(restart)
        log.event("start")
        log.open_stream(restart, 0, "rtc")
        writer.listen(log, 0, restart, DAYS * 24 - hours_done - 2)
    else:
        writer.listen(log, sample, DAY0 + timedelta(hours=hours_done), DAYS * 24 - hours_done)
    log.event("stop", exit_code=0)
    log.close()


def write_season(cards: Path, clips: bool = True) -> list[Path]:
    """Three units on three cards: Chicago nights, Berlin around the clock with a gap and a crash, one with no zone."""
    roots = [cards / "sd1", cards / "sd2", cards / "sd3"]
    nightly_unit(roots[0], "AM-01", "America/Chicago", clips=clips)
    always_on_unit(roots[1], "AM-02", "Europe/Berlin", crash=True, gap=True)
    always_on_unit(roots[2], "AM-03", None, crash=False, gap=False, clips=clips, threshold=0.5)
    return roots
