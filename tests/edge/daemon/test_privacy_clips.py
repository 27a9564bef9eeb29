"""No clip is saved near a privacy hit (e.g. "human speech") — including speech that is still going on, or
still awaiting confirmation, when the animal's event closes, and speech that starts within the guard after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from desk.collect.cards import read_card
from edge.audio.file_stream import DEFAULT_CHUNK_SAMPLES
from edge.daemon.runner import Daemon
from edge.ops.setup import InputOptions, build_daemon
from tests.edge.daemon.test_daemon import log_events, unit_config
from tests.edge.daemon.test_field_truth import column

RATE = 48_000


class ScriptedBackend:
    """The model replaced by a script: the n-th window (in stream order) embeds as the named label's vector."""

    def __init__(self, inner, label_vectors: dict[str, np.ndarray], script: list[str]) -> None:
        self.name, self.precision = inner.name, inner.precision
        self.vectors, self.script, self.seen = label_vectors, script, 0

    def embed(self, features: np.ndarray) -> np.ndarray:
        rows = [self.vectors[self.script[min(self.seen + i, len(self.script) - 1)]] for i in range(len(features))]
        self.seen += len(features)
        return np.stack(rows).astype(np.float32)


def run_scripted(example_bundle: Path, example_labels: tuple[Path, Path], log_dir: Path, recording: Path,
                 script: list[str], guard_s: float = 0, chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
                 watch: Callable[[Daemon], None] | None = None, **extra: object) -> list[dict]:
    """Run the daemon over ``recording`` (read ``chunk_samples`` at a time) with window embeddings from
    ``script``; the card's events. ``watch`` is given the daemon before it runs."""
    log_dir.mkdir()
    toad_only = log_dir.parent / "toad.txt"
    toad_only.write_text("toad\n", encoding="utf-8")
    settings = {"analysis.privacy_prompts": ["night"], "analysis.privacy_guard_s": guard_s,
                "analysis.background_prompts": [], "analysis.score_mode": "logit", "analysis.hop_s": 5.0,
                "storage.clips.mode": "detections", "storage.clips.max_per_hour": 0,
                "storage.governor.min_free_mb": 0, "storage.governor.clips_min_free_percent": 0, **extra}
    labels = (toad_only, example_labels[1])
    probe = build_daemon(unit_config(example_bundle, labels, log_dir, **settings), InputOptions(recording, fast=True))
    names, matrix = tuple(probe.stages.selector.names), probe.stages.scorer.label_matrix
    toad, night = matrix[:, names.index("toad")], matrix[:, names.index("night")]
    quiet = np.random.default_rng(0).standard_normal(toad.shape).astype(np.float32)
    for axis in (toad, night - (night @ toad) * toad):  # quiet is orthogonal to both: it scores 0
        quiet -= (quiet @ axis) / (axis @ axis) * axis
    vectors = {"toad": toad, "night": night, "quiet": quiet / np.linalg.norm(quiet),
               "both": (toad + night) / np.linalg.norm(toad + night)}
    # the threshold halfway between a label's own score and the other label's: each vector fires only its label
    # ("both", at sqrt((1 + toad @ night) / 2) of the scale for each, fires both)
    threshold = probe.stages.scorer.logit_scale * (1 + float(toad @ night)) / 2
    daemon = build_daemon(unit_config(example_bundle, labels, log_dir, **settings, **{"analysis.threshold": threshold}),
                          InputOptions(recording, fast=True, chunk_samples=chunk_samples))
    backend = ScriptedBackend(daemon.stages.backend, vectors, script)
    daemon.stages = replace(daemon.stages, backend=backend)
    daemon.stages_factory = lambda: daemon.stages
    if watch is not None:
        watch(daemon)
    assert daemon.run() == 0
    return log_events(log_dir)


def test_a_clip_is_not_saved_while_speech_is_still_open(example_bundle: Path, example_labels: tuple[Path, Path],
                                                        toad_in_night: Path, tmp_path: Path) -> None:
    # 10 s windows every 5 s, "night" standing for human speech: the toad is heard in windows 1-2; speech
    # starts in window 3, overlapping the toad's audio, and is still going on when the toad's event closes
    heard = run_scripted(example_bundle, example_labels, tmp_path / "alone", toad_in_night,
                         ["quiet", "toad", "toad"] + ["quiet"] * 20)
    assert not [e for e in heard if e["kind"] == "privacy_hit"]
    assert len(sorted((tmp_path / "alone" / "clips").rglob("*.flac"))) == 1, "precondition: the toad's clip"
    events = run_scripted(example_bundle, example_labels, tmp_path / "speech", toad_in_night,
                          ["quiet", "toad", "toad"] + ["night"] * 20)
    assert [e for e in events if e["kind"] == "privacy_hit"], "precondition: speech was heard"
    assert "toad" in [str(v) for v in column(read_card(tmp_path / "speech").detections, "label")], "still logged"
    assert not sorted((tmp_path / "speech").rglob("*.flac")), "no clip of audio that overlaps open speech"


def clips_of(log_dir: Path) -> list[Path]:
    return sorted(log_dir.rglob("*.flac"))


@pytest.mark.parametrize(("speech_after_s", "clip_saved"), [(5, False), (20, True)])
def test_speech_that_starts_after_the_clip_within_the_guard_takes_it_back(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path,
        speech_after_s: int, clip_saved: bool) -> None:
    # 10 s windows every 5 s, a 15 s guard: the toad is heard in windows 1-2 (its event ends at 20 s and closes
    # on the quiet window 3); speech starts ``speech_after_s`` after that end, well after the toad's event closed
    first_speech = (20 + speech_after_s) // 5
    script = ["quiet", "toad", "toad"] + ["quiet"] * (first_speech - 3) + ["night"] * 20
    events = run_scripted(example_bundle, example_labels, tmp_path / "card", toad_in_night, script, guard_s=15)
    hits = [e for e in events if e["kind"] == "privacy_hit"]
    assert hits and hits[0]["sample"] == (20 + speech_after_s) * RATE, "precondition: speech heard from then on"
    assert "toad" in [str(v) for v in column(read_card(tmp_path / "card").detections, "label")], "still logged"
    assert len(clips_of(tmp_path / "card")) == (1 if clip_saved else 0)


def test_a_clip_whose_guard_outlasts_the_recording_is_decided_at_the_end(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    # the toad in windows 8-9 (40-55 s), the recording ends at 60 s, before its 15 s guard was heard: decided with
    # the audio analysed so far (no speech), so saved at the stop
    events = run_scripted(example_bundle, example_labels, tmp_path / "card", toad_in_night,
                          ["quiet"] * 8 + ["toad", "toad"] + ["quiet"] * 10, guard_s=15)
    assert not [e for e in events if e["kind"] == "privacy_hit"]
    assert len(clips_of(tmp_path / "card")) == 1


def test_speech_awaiting_confirmation_when_the_recording_ends_withholds_the_last_clip(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    # 2-of-2 confirmation: the toad in windows 8-10 (40-60 s), still open when the recording ends; speech heard in
    # the last window only, still awaiting its second window when the end closes the toad's event
    settings = {"analysis.confirm_n": 2, "analysis.confirm_m": 2}
    script = ["quiet"] * 8 + ["toad", "toad"]
    alone = run_scripted(example_bundle, example_labels, tmp_path / "alone", toad_in_night,
                         script + ["toad"] * 10, guard_s=15, **settings)
    assert not [e for e in alone if e["kind"] == "privacy_hit"]
    assert len(clips_of(tmp_path / "alone")) == 1, "precondition: the toad's clip"
    speech = run_scripted(example_bundle, example_labels, tmp_path / "speech", toad_in_night,
                          script + ["both"] * 10, guard_s=15, **settings)
    assert not [e for e in speech if e["kind"] == "privacy_hit"], "precondition: the speech was never confirmed"
    assert "toad" in [str(v) for v in column(read_card(tmp_path / "speech").detections, "label")], "still logged"
    assert not clips_of(tmp_path / "speech")
