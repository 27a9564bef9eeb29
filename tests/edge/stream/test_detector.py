"""Event rules: hysteresis, N-of-M confirmation, cooldown, merging, and contradictions caught up front."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.scoring.scorer import Scores
from edge.stream.detector import DetectorOptions, EventDetector

HOP = 5
WINDOW = 10


def feed(detector: EventDetector, series: list[float]) -> list[tuple[int, int, float, int]]:
    """Scores of one label, one window per hop; returns (start, end, peak, windows) of every event."""
    scores = np.array(series, dtype=np.float32)[:, None]
    starts = [i * HOP for i in range(len(series))]
    events = detector.update(starts, [s + WINDOW for s in starts], Scores(scores / 10, scores))
    events += detector.flush()
    return [(e.start_sample, e.end_sample, e.peak_score, e.windows) for e in events]


def test_overlapping_hits_merge_into_one_event_with_peak() -> None:
    detector = EventDetector(("frog",), DetectorOptions(enter=5))
    assert feed(detector, [1, 6, 9, 7, 2, 1, 8, 1]) == [(5, 25, 9.0, 3), (30, 40, 8.0, 1)]


def test_hysteresis_keeps_an_event_open_between_exit_and_enter() -> None:
    detector = EventDetector(("frog",), DetectorOptions(enter=5, exit=3))
    assert feed(detector, [6, 4, 4, 2, 4]) == [(0, 20, 6.0, 3)]


def test_n_of_m_confirmation_suppresses_single_window_blips() -> None:
    detector = EventDetector(("frog",), DetectorOptions(enter=5, confirm_n=2, confirm_m=3))
    assert feed(detector, [6, 1, 1, 6, 1, 6, 1, 1]) == [(15, 35, 6.0, 2)]


def test_cooldown_blocks_a_new_event_right_after_one_closes() -> None:
    detector = EventDetector(("frog",), DetectorOptions(enter=5, cooldown_samples=12))
    assert feed(detector, [6, 1, 6, 1, 1, 6]) == [(0, 10, 6.0, 1), (25, 35, 6.0, 1)]


def test_per_label_thresholds() -> None:
    detector = EventDetector(("frog", "owl"), DetectorOptions(enter=5, per_label_enter={"owl": 8}))
    scores = np.array([[6, 6], [6, 9]], dtype=np.float32)
    events = detector.update([0, 5], [10, 15], Scores(scores / 10, scores)) + detector.flush()
    assert sorted((e.label, e.start_sample) for e in events) == [("frog", 0), ("owl", 5)]


@pytest.mark.parametrize(("options", "message"), [
    (DetectorOptions(enter=5, confirm_n=3, confirm_m=4), "a short call is in at most 2 window"),
    (DetectorOptions(enter=5, confirm_n=3, confirm_m=2), "impossible"),
    (DetectorOptions(enter=5, exit=6), "exit threshold 6 is above enter threshold 5"),
])
def test_contradictory_rules_are_rejected_at_start(options: DetectorOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        options.validate(window_samples=WINDOW, hop_samples=HOP)
