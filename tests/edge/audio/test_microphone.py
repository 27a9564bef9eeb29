"""A real PortAudio stream: PulseAudio's null sink `fieldmic` (started by .ci/run) is the microphone.

`paplay --device=fieldmic` plays a recording into the sink; the daemon captures its monitor through
PortAudio's ALSA `pulse` device with PULSE_SOURCE=fieldmic.monitor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from desk.collect.cards import read_card
from tests.card_wait import first_health, wait_for_card
from tests.conftest import NIGHT, REPO, SINK, SINK_ARGS, TOAD, load_48k

RATE = 48_000
WINDOW_S, HOP_S = 10, 5
TOAD_AT_S, TOAD_LEN_S = 15, 10
OUTAGE_S = 3.0
PAUSE_S = 7.0


@pytest.fixture(scope="module")
def toad_clip(tmp_path_factory: pytest.TempPathFactory, shared_audio: Path) -> Path:
    """30 s of night background with 10 s of toad trill at 15-25 s (48 kHz mono)."""
    night = load_48k(shared_audio / NIGHT)
    toad = load_48k(shared_audio / TOAD)
    track = np.tile(night, 3)[: 30 * RATE].copy()
    track[TOAD_AT_S * RATE : (TOAD_AT_S + TOAD_LEN_S) * RATE] = toad[5 * RATE : 15 * RATE]
    path = tmp_path_factory.mktemp("mic") / "toad_at_15s.wav"
    sf.write(path, track, RATE, subtype="PCM_16")
    return path


def start_daemon(bundle: Path, labels: Path, log_dir: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "edge", "run", "--labels", str(labels), "--bundle", str(bundle), "--log-dir",
               str(log_dir), "--device", "pulse", "--threshold", "0.5", "--score-mode", "softmax",
               "--heartbeat", "1", "--set", "unit.unit_id=mic-test", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PULSE_SOURCE": f"{SINK}.monitor"}
    return subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def wait_for_event(log_dir: Path, kind: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (log_dir / "events").is_dir():
            for record, _ in read_card(log_dir).events:
                if record["kind"] == kind:
                    return record
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event within {timeout_s} s")


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    assert code == 0, process.stderr.read() if process.stderr else ""


@pytest.mark.parametrize("capture_rate", [None, 44_100], ids=["48k", "44k1-resampled"])
def test_played_toad_is_detected_at_the_right_time_with_no_gaps(pulse: None, example_bundle: Path,
                                                                  example_labels: tuple[Path, Path],
                                                                  toad_clip: Path, tmp_path: Path,
                                                                  capture_rate: int | None) -> None:
    extra = ["--rate", str(capture_rate)] if capture_rate else []
    process = start_daemon(example_bundle, example_labels[0], tmp_path, *extra)
    try:
        opened = wait_for_event(tmp_path, "stream_open", 30)
        time.sleep(1.0)
        played_at = datetime.now(timezone.utc)
        subprocess.run(["paplay", f"--device={SINK}", str(toad_clip)], check=True, timeout=60)
        offset = (played_at - datetime.fromisoformat(opened["utc"])).total_seconds()
        wait_for_card(tmp_path, first_health(lambda r: r["samples_received"] >= (offset + 30) * RATE), 60,
                      "heartbeat with the whole clip received")
    finally:
        stop(process)
    contents = read_card(tmp_path)
    toad_start, toad_end = (offset + TOAD_AT_S) * RATE, (offset + TOAD_AT_S + TOAD_LEN_S) * RATE
    cols = {name: i for i, name in enumerate(contents.detections.columns)}
    toads = [(int(r[cols["start_sample"]]), int(r[cols["end_sample"]])) for r in contents.detections.rows
             if r[cols["label"]] == "toad"]
    assert len(toads) == 1, toads
    start, end = toads[0]
    assert toad_start - WINDOW_S * RATE <= start <= toad_start
    assert toad_end <= end <= toad_end + WINDOW_S * RATE
    kinds = [record["kind"] for record, _ in contents.events]
    assert not {"gap", "xrun", "stream_lost"} & set(kinds), kinds
    last = contents.health[-1][0]
    assert last["xruns"] == 0 and last["overwritten_frames"] == 0
    stopped = [r for r, _ in contents.events if r["kind"] == "stop"][0]
    assert last["samples_received"] == stopped["sample"] >= (offset + 30) * RATE
    device = [r for r, _ in contents.events if r["kind"] == "audio_device"][0]
    assert device["rate"] == (capture_rate or RATE)


def test_microphone_unplugged_and_replugged_resumes_within_2_s_and_the_gap_tells_the_truth(
        pulse: None, example_bundle: Path, example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    process = start_daemon(example_bundle, example_labels[0], tmp_path, "--set", "health.no_audio_s=2")
    try:
        wait_for_event(tmp_path, "stream_open", 30)
        wait_for_card(tmp_path, first_health(lambda r: r["samples_received"] > 0), 30, "heartbeat with audio")
        unplugged_at = datetime.now(timezone.utc)
        subprocess.run(["pactl", "unload-module", "module-null-sink"], check=True)
        lost = wait_for_event(tmp_path, "stream_lost", 30)
        time.sleep(OUTAGE_S)  # the outage itself: a chosen duration, not a wait for state
    finally:
        replugged_at = datetime.now(timezone.utc)
        subprocess.run(["pactl", "load-module", "module-null-sink", *SINK_ARGS.split()], check=True,
                       capture_output=True)
    try:
        gap = wait_for_event(tmp_path, "gap", 60)
        wait_for_card(tmp_path, first_health(lambda r: r["samples_received"] > gap["end_sample"]), 30,
                      "heartbeat with audio after the gap")
    finally:
        stop(process)
    contents = read_card(tmp_path)
    opens = [r for r, _ in contents.events if r["kind"] == "stream_open"]
    assert len(opens) == 2 and opens[-1]["sample"] == gap["end_sample"]
    reopened_at = datetime.fromisoformat(opens[-1]["anchor_utc"])
    assert (reopened_at - replugged_at).total_seconds() < 2.0, "capture resumes within 2 s of the device's return"
    # the gap is measured on the wall clock: from the last sample before the loss to the first one after it
    gap_from, gap_to = datetime.fromisoformat(gap["from_utc"]), datetime.fromisoformat(gap["to_utc"])
    assert gap["seconds"] == pytest.approx((gap_to - gap_from).total_seconds(), abs=0.01)
    assert abs((gap_to - reopened_at).total_seconds()) < 0.002  # the card writes milliseconds
    assert abs((gap_from - unplugged_at).total_seconds()) < 1.0
    assert gap["seconds"] >= (replugged_at - unplugged_at).total_seconds() - 1.0
    # heartbeats during the outage carry the wall-clock time, not the last analysed sample's
    during = {r["utc"] for r, _ in contents.health
              if datetime.fromisoformat(lost["utc"]) < datetime.fromisoformat(r["utc"]) < gap_to}
    assert len(during) >= 2, during
    # the unfinished hop before the loss was analysed: effort of stream 1 reaches the last sample received
    effort = contents.effort
    stream, last = effort.columns.index("stream"), effort.columns.index("last_sample")
    assert max(int(str(r[last])) for r in effort.rows if r[stream] == "1") == lost["sample"]
    stopped = [r for r, _ in contents.events if r["kind"] == "stop"][0]
    assert stopped["sample"] > gap["end_sample"]


def test_a_paused_process_is_not_a_lost_stream(pulse: None, example_bundle: Path,
                                               example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    process = start_daemon(example_bundle, example_labels[0], tmp_path, "--set", "health.no_audio_s=2")
    try:
        wait_for_card(tmp_path, first_health(lambda r: r["samples_received"] > 0), 30, "heartbeat with audio")
        process.send_signal(signal.SIGSTOP)
        time.sleep(PAUSE_S)  # how long the process is frozen: a chosen duration, longer than no_audio_s
        process.send_signal(signal.SIGCONT)
        paused = wait_for_event(tmp_path, "process_paused", 30)
        wait_for_card(tmp_path, first_health(lambda r: r["samples_received"] > paused["sample"] + RATE), 30,
                      "heartbeat with audio after the pause")
    finally:
        process.send_signal(signal.SIGCONT)
        stop(process)
    kinds = [r["kind"] for r, _ in read_card(tmp_path).events]
    assert paused["paused_s"] >= PAUSE_S - 1 and "stream_lost" not in kinds, kinds


@pytest.mark.parametrize(("extra", "message", "code"), [
    # no such microphone at boot is the documented "no audio" exit (3), not a config error
    (["--device", "no-such-microphone"], "no input device matches 'no-such-microphone'", 3),
    # PulseAudio resamples any rate, so only the config's range check can be provoked here
    (["--device", "pulse", "--rate", "1000000"], "audio.sample_rate: Input should be less than or equal to 384000", 2),
])
def test_bad_microphone_settings_are_one_line(pulse: None, example_bundle: Path, example_labels: tuple[Path, Path],
                                              tmp_path: Path, extra: list[str], message: str, code: int) -> None:
    command = [sys.executable, "-m", "edge", "run", "--labels", str(example_labels[0]), "--bundle",
               str(example_bundle), "--log-dir", str(tmp_path), "--threshold", "0.5", *extra]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == code and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    if "no-such-microphone" in extra:
        failed = [r for r, _ in read_card(tmp_path).events if r["kind"] == "stream_open_failed"]
        assert failed and "no-such-microphone" in failed[0]["reason"]


def test_missing_bundle_and_empty_labels_are_one_line(example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    for labels, bundle, message in ((example_labels[0], tmp_path / "nowhere", "nowhere"),
                                    (empty, tmp_path, "has no labels")):
        command = [sys.executable, "-m", "edge", "run", "--labels", str(labels), "--bundle", str(bundle),
                   "--log-dir", str(tmp_path / "log"), "--threshold", "0.5"]
        done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
