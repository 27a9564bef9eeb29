"""Helpers for the card-log tests: write real cards with the real writer, mount size-capped filesystems."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.card.cardlog import CardLog, UnitIdentity
from edge.stream.detector import DetectionEvent

RATE = 48_000
WINDOW = 10 * RATE
HOP = 5 * RATE
LABELS = ("toad", "wood frog", "barred owl")
T0 = datetime(2024, 5, 1, 21, 0, tzinfo=timezone.utc)


def event_at(start: int, label: str, score: float = 1.5) -> DetectionEvent:
    return DetectionEvent(start, start + WINDOW, label, score, score / 10, start, 2)


def write_card(root: Path, unit_id: str = "AM-01", *, start: datetime = T0, minutes: int = 10,
               clock_sync: str = "ntp", boot_info: dict[str, Any] | None = None, streams: int = 1,
               pause_minutes: int = 0, boot_id: str | None = None, health: dict[str, Any] | None = None,
               scheduled_pauses: bool = False) -> CardLog:
    """A closed card log: ``streams`` streams of ``minutes`` of audio each, one detection per hop, cycling labels.

    Streams are separated by ``pause_minutes`` of nothing analysed (a gap in effort, or with
    ``scheduled_pauses`` the schedule's off time, logged as the daemon does).
    """
    info = boot_info if boot_info is not None else {"config_hash": "cfg-1", "thresholds": {"toad": 0.3}}
    log = CardLog(root, UnitIdentity(unit_id, "marsh-2024"), RATE, info, boot_id=boot_id,
                  wall_clock=lambda: start)
    sample = 0
    per_stream = minutes * 60 * RATE
    for number in range(streams):
        anchor = start + timedelta(minutes=number * (minutes + pause_minutes))
        log.open_stream(anchor, sample, clock_sync)
        log.event("scheduled_on" if scheduled_pauses and number else "start", sample=sample)
        end = sample + per_stream
        for index, hop_start in enumerate(range(sample, end - WINDOW + 1, HOP)):
            log.effort(hop_start, hop_start + WINDOW)
            log.detections([event_at(hop_start, LABELS[index % len(LABELS)])])
            if index % 12 == 0:
                log.health(health or {"temperature_c": 30.0 + number})
                log.flush()
        if scheduled_pauses and number < streams - 1:
            log.event("scheduled_off", sample=end)
        sample = end + pause_minutes * 60 * RATE
    log.close()
    return log


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[Path]:
    """A real size-capped tmpfs at ``folder`` (needs root); the test is skipped with the reason if mounting fails."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-capped tmpfs here ({result.stderr.strip() or 'mount failed'}); "
                    "run as root or with CAP_SYS_ADMIN to test a full card")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_up(folder: Path) -> Path:
    """Write a filler file until the filesystem reports it is full; returns the filler."""
    filler = folder / "filler.bin"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(block)
    return filler
