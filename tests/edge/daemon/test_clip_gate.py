"""The clip gate's bounds, in samples: a clip waits exactly until the window starting ``guard`` after its event's
end is analysed; speech starting before then withholds it, speech starting then does not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.daemon.clip_gate import ClipGate, PrivacySpans, _near
from edge.stream.clip_buffer import Clip
from edge.stream.detector import DetectionEvent

GUARD = 1_000
TOAD = DetectionEvent(5_000, 8_000, "toad", 0.9, 0.5, 5_000, 2)


def held_gate() -> ClipGate:
    gate = ClipGate(GUARD, (0, 0), spans_remembered=64)
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

    gate = ClipGate(GUARD, (0, 0), spans_remembered=64)
    assert gate.decide(TOAD.end_sample, open_spans) == [] and gate.decide(None, open_spans) == []
    assert asked == [], "an empty gate decides nothing and does not ask the detector"
    held = held_gate()
    assert len(held.decide(TOAD.end_sample + GUARD, open_spans)) == 1 and asked == [1]
    assert held.decide(None, open_spans) == [] and asked == [1]  # released: empty again


def test_merged_spans_decide_exactly_as_every_hit_would() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        guard = int(rng.integers(0, 300))
        hits = [(int(s), int(s + rng.integers(1, 200))) for s in rng.integers(0, 5_000, int(rng.integers(1, 30)))]
        memory = PrivacySpans(guard)
        memory.add(hits)
        starts = rng.integers(0, 5_500, 200)
        for start, end in zip(starts, starts + rng.integers(1, 400, 200)):
            audio = (int(start), int(end))
            assert memory.near(audio) == any(_near(audio, hit, guard) for hit in hits), (guard, hits, audio)


def test_spans_are_forgotten_once_no_clip_can_lie_within_the_guard() -> None:
    memory = PrivacySpans(GUARD)
    memory.add([(0, 100)])
    memory.add([(2_200, 2_300)])  # more than 2 guards after the first: kept apart
    memory.add([(2_250, 2_400), (3_000, 3_100)])  # overlaps / within 2 guards: merged
    assert memory.spans == ((0, 100), (2_200, 3_100))
    memory.forget(100 + GUARD)  # no audio from here on is within the guard of the first span
    assert memory.spans == ((2_200, 3_100),)
    memory.forget(3_100 + GUARD - 1)
    assert memory.spans == ((2_200, 3_100),)


def test_a_held_clip_keeps_the_speech_near_it_and_its_roll_is_guarded() -> None:
    gate = ClipGate(GUARD, (500, 500), spans_remembered=64)
    gate.heard([(3_000, 3_600)])  # within the guard of the pre-roll (4 500), not of the event (5 000)
    gate.hold([TOAD], [], lambda event: Clip((np.zeros(4_000, dtype=np.int16),), 4_500, 0))
    assert not gate.held, "speech near the pre-roll's audio withholds the clip"
    gate = ClipGate(GUARD, (500, 500), spans_remembered=64)
    gate.hold([TOAD], [], lambda event: Clip((np.zeros(4_000, dtype=np.int16),), 4_500, 0))
    assert gate.held[0].decide_at == TOAD.end_sample + 500 + GUARD, "decided after the post-roll's guard"
    gate.heard([(9_000, 9_100)])
    gate.forget(20_000)  # later events cannot be near it, but the held clip is
    assert gate.privacy.spans == ((9_000, 9_100),)
    assert gate.decide(TOAD.end_sample + 500 + GUARD, lambda: []) == []
