"""The clip gate's bounds, in samples: a clip waits exactly until the window starting ``guard`` after its event's
end is analysed; speech starting before then withholds it, speech starting then does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.daemon.clip_gate import ClipGate
from edge.stream.clip_buffer import Clip
from edge.stream.detector import DetectionEvent

GUARD = 1_000
TOAD = DetectionEvent(5_000, 8_000, "toad", 0.9, 0.5, 5_000, 2)


def held_gate() -> ClipGate:
    gate = ClipGate(GUARD, hits_remembered=16, spans_remembered=64)
    clip = Clip((np.zeros(3_000, dtype=np.int16),), 5_000, 0)
    # a frog detected over the same span shares the toad's (better scoring) clip
    gate.hold([replace(TOAD, label="frog", peak_score=0.5), TOAD], [], lambda event: clip)
    return gate


def test_a_clip_is_released_once_the_window_at_the_guards_end_is_analysed() -> None:
    gate = held_gate()
    assert [h.event.label for h in gate.held] == ["toad"]
    assert gate.decide(TOAD.end_sample + GUARD - 1, lambda: []) == [] and len(gate.held) == 1
    released = gate.decide(TOAD.end_sample + GUARD, lambda: [])
    assert [h.event for h in released] == [TOAD] and not gate.held


def test_speech_starting_within_the_guard_withholds_and_at_its_end_does_not() -> None:
    within = held_gate()
    assert within.decide(TOAD.end_sample + GUARD, lambda: [(TOAD.end_sample + GUARD - 1, 20_000)]) == []
    assert not within.held, "dropped, not kept"
    at_end = held_gate()
    assert len(at_end.decide(TOAD.end_sample + GUARD, lambda: [(TOAD.end_sample + GUARD, 20_000)])) == 1


def test_closed_speech_is_remembered_and_the_stop_decides_everything_held() -> None:
    gate = held_gate()
    gate.heard([(TOAD.start_sample - GUARD - 10, TOAD.start_sample - GUARD + 1)])  # ends just inside the guard
    assert gate.decide(None, lambda: []) == []
    clean = held_gate()
    assert len(clean.decide(None, lambda: [])) == 1, "at a stop, decided on what was analysed"


def test_nothing_held_asks_for_no_open_spans() -> None:
    asked: list[int] = []

    def open_spans() -> list[tuple[int, int]]:
        asked.append(1)
        return []

    gate = ClipGate(GUARD, hits_remembered=16, spans_remembered=64)
    assert gate.decide(TOAD.end_sample, open_spans) == [] and gate.decide(None, open_spans) == []
    assert asked == [], "an empty gate decides nothing and does not ask the detector"
    held = held_gate()
    assert len(held.decide(TOAD.end_sample + GUARD, open_spans)) == 1 and asked == [1]
    assert held.decide(None, open_spans) == [] and asked == [1]  # released: empty again
