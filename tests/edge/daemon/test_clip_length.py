"""`storage.clips.max_s` bounds the audio an open event holds in memory (the Pi profiles ship 60 s), and the clip
written from the held chunks, piece by piece, is the recording's own samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from desk.collect.cards import read_card
from edge.card.guano import read_guano
from edge.config.loader import resolve_config
from edge.ops.setup import InputOptions, build_daemon
from edge.stream.clip_buffer import to_pcm16
from tests.conftest import load_48k
from tests.edge.daemon.test_daemon import log_events, unit_config
from tests.edge.daemon.test_field_truth import column

RATE = 48_000


def test_a_long_events_clip_keeps_its_last_max_s_seconds_sample_for_sample(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    config = unit_config(example_bundle, example_labels, tmp_path, **{
        "analysis.threshold": 0.0, "storage.clips.mode": "detections", "storage.clips.max_per_hour": 0,
        "storage.clips.max_s": 20, "storage.governor.min_free_mb": 0, "storage.governor.clips_min_free_percent": 0})
    assert build_daemon(config, InputOptions(toad_in_night, fast=True)).run() == 0
    detections = read_card(tmp_path).detections
    spans = [int(str(e)) - int(str(s)) for s, e in zip(column(detections, "start_sample"),
                                                         column(detections, "end_sample"))]
    assert max(spans) > 30 * RATE, "precondition: an event longer than max_s"
    recording = to_pcm16(load_48k(toad_in_night))
    clips = sorted((tmp_path / "clips").rglob("*.flac"))
    cut = [c for c in clips if float(read_guano(c).get("BIOL|Cut Start S", 0)) > 0]
    assert cut, "the long event's clip says its start is missing"
    for clip in clips:
        audio, rate = sf.read(clip, dtype="int16")
        start = int(read_guano(clip)["BIOL|Clip Start Sample"])
        assert rate == RATE and len(audio) <= 20 * RATE, clip.name
        assert np.array_equal(audio, recording[start:start + len(audio)]), f"{clip.name} is not the recording's audio"
    assert {"clip_cut"} <= {r["kind"] for r in log_events(tmp_path)}


def test_the_pi_profiles_ship_a_60_s_clip_cap_and_others_keep_120() -> None:
    for profile in ("raspberry-pi-4", "raspberry-pi-5"):
        assert resolve_config(None, profile).storage.clips.max_s == 60
    assert resolve_config(None, "generic-x86").storage.clips.max_s == 120
