"""The unit's WAV clips read by the `guano` package (the GUANO reference implementation), not by our parser."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import guano
import numpy as np

from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.governor import StoragePolicy
from edge.stream.detector import DetectionEvent

RATE = 48_000


def test_a_units_wav_clip_carries_guano_the_reference_reader_understands(tmp_path: Path) -> None:
    start = datetime(2024, 5, 1, 3, 0, 0, tzinfo=timezone.utc)
    log = CardLog(tmp_path / "card", UnitIdentity("AM-07", "marsh-2024"), RATE, {},
                  StoragePolicy(0, 0, clip_format="wav"), wall_clock=lambda: start)
    log.open_stream(start, 0, "gps")
    audio = (0.1 * np.random.default_rng(0).standard_normal(12 * RATE)).astype(np.float32)
    event = DetectionEvent(RATE, 11 * RATE, "Great Plains Toad", 14.5, 0.3, RATE, 3)
    path = log.save_clip(event, audio, 0)
    log.close()
    assert path is not None and path.suffix == ".wav"
    read = guano.GuanoFile(str(path))
    assert read["Species Auto ID"] == "Great Plains Toad"
    assert read["Serial"] == "AM-07"
    assert read["Samplerate"] == RATE
    assert read["Length"] == 12.0
    assert read["Timestamp"].astimezone(timezone.utc) == start
    assert read["BIOL", "Boot"] == log.boot_id
    assert int(read["BIOL", "Event Start Sample"]) == RATE
