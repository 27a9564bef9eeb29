"""Every analysed window of speech guards clips, not only confirmed speech: a window N-of-M confirmation rejects,
one heard during the privacy label's cooldown, and any number of hits before the clip is decided; and the guard's
memory of speech is bounded by time (merged spans), not by a count of hits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from desk.collect.cards import read_card
from edge.daemon.runner import Daemon
from tests.edge.daemon.test_field_truth import column
from tests.edge.daemon.test_privacy_clips import RATE, clips_of, run_scripted

# 10 s windows every 5 s: window i is [5 i, 5 i + 10) s. "night" stands for human speech, "toad" for an animal.


@pytest.fixture(scope="module")
def ten_minutes(toad_in_night: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 s of audio (the scripted backend decides what each window "hears")."""
    audio, rate = sf.read(toad_in_night, dtype="int16")
    path = tmp_path_factory.mktemp("long") / "ten_minutes.wav"
    sf.write(path, np.tile(audio, 10), rate, subtype="PCM_16")
    return path


def toad_logged(log_dir: Path) -> bool:
    return "toad" in [str(v) for v in column(read_card(log_dir).detections, "label")]


def privacy_hits(events: list[dict]) -> list[dict]:
    return [e for e in events if e["kind"] == "privacy_hit"]


@pytest.mark.parametrize("speech", [False, True])
def test_a_speech_window_that_confirmation_rejects_withholds_the_clip(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path,
        speech: bool) -> None:
    # 2-of-3 confirmation, 15 s guard: one window of speech (window 2, 10-20 s) is never confirmed, and has left
    # the last 3 windows long before the toad's event (windows 6-7, 30-45 s, clip 28-47 s) closes
    script = ["quiet"] * 2 + ["night" if speech else "quiet"] + ["quiet"] * 3 + ["toad"] * 2 + ["quiet"] * 20
    events = run_scripted(example_bundle, example_labels, tmp_path / "card", toad_in_night, script, guard_s=15,
                          **{"analysis.confirm_n": 2, "analysis.confirm_m": 3})
    assert not privacy_hits(events), "precondition: the speech window was never confirmed"
    assert toad_logged(tmp_path / "card"), "the detection row is logged either way"
    assert len(clips_of(tmp_path / "card")) == (0 if speech else 1)


@pytest.mark.parametrize("speech", [False, True])
def test_a_speech_window_in_the_privacy_labels_cooldown_withholds_the_clip(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path,
        speech: bool) -> None:
    # a 30 s cooldown, 5 s guard: speech in window 0 (0-10 s) is an event; speech again in window 4 (20-30 s) falls
    # in the cooldown (until 40 s), so it opens none; the toad in window 7 (35-45 s, clip 33-47 s) is within 5 s
    script = ["night"] + ["quiet"] * 3 + ["night" if speech else "quiet"] + ["quiet"] * 2 + ["toad"] + ["quiet"] * 20
    events = run_scripted(example_bundle, example_labels, tmp_path / "card", toad_in_night, script, guard_s=5,
                          **{"analysis.cooldown_s": 30})
    assert [e["sample"] for e in privacy_hits(events)] == [0], "precondition: the second speech opened no event"
    assert toad_logged(tmp_path / "card")
    assert len(clips_of(tmp_path / "card")) == (0 if speech else 1)


def test_forty_speech_hits_heard_before_a_clip_is_decided_are_all_remembered(
        example_bundle: Path, example_labels: tuple[Path, Path], ten_minutes: Path, tmp_path: Path) -> None:
    # a unit catching up (the whole backlog read at once, 64 windows a batch): the toad in windows 1-2 (5-20 s,
    # clip 3-22 s), speech within its 15 s guard in window 5 (25-35 s), then 40 separate speech hits from 40 s on
    # (windows 8, 10, ..., 86); all of them are heard before the clip is decided
    script = ["quiet", "toad", "toad", "quiet", "quiet", "night", "quiet", "quiet"] + ["night", "quiet"] * 40
    events = run_scripted(example_bundle, example_labels, tmp_path / "card", ten_minutes, script + ["quiet"] * 60,
                          guard_s=15, chunk_samples=600 * RATE, **{"model.max_batch": 64})
    assert len(privacy_hits(events)) == 41, "precondition: 41 separate privacy events"
    assert toad_logged(tmp_path / "card")
    assert not clips_of(tmp_path / "card"), "the first hit, within the guard, is not forgotten"


@pytest.mark.parametrize(("script", "events_logged"), [
    ((["night"] + ["quiet"] * 11) * 10, 10),  # a hit every minute, each further than twice the guard from the next
    (["quiet"] * 4 + ["night"] * 100, 1),  # eight minutes of continuous speech
])
def test_the_memory_of_speech_is_bounded_by_time(
        example_bundle: Path, example_labels: tuple[Path, Path], ten_minutes: Path, tmp_path: Path,
        script: list[str], events_logged: int) -> None:
    kept: list[int] = []

    def watch(daemon: Daemon) -> None:
        gate = daemon._gate
        forget = gate.forget

        def counting(events_from: int) -> None:
            forget(events_from)
            kept.append(len(gate.privacy.spans))

        gate.forget = counting  # type: ignore[method-assign]

    events = run_scripted(example_bundle, example_labels, tmp_path / "card", ten_minutes, script + ["quiet"] * 20,
                          guard_s=15, watch=watch)
    assert len(privacy_hits(events)) == events_logged
    assert len(kept) > 20, "precondition: counted over the run"
    assert max(kept) == 1, "one span at a time: a minute apart, or one long span"
