"""Field truth on a file source: every failure is loud and recorded, effort never lags detections after kill -9,
a full card loses nothing silently, clips cover long events, every clip setting acts, the boot record is whole."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from desk.collect.cards import CardContents, read_card
from edge.card.guano import read_guano
from edge.card.reserve import FALLBACK_SUFFIX
from edge.daemon.runner import EXIT_CARD_INCOMPLETE, EXIT_NO_AUDIO, EXIT_PIPELINE
from edge.ops.setup import InputOptions, build_daemon
from tests.card_wait import first_health, wait_for_card
from tests.cardlog_support import fill_up, small_filesystem
from tests.conftest import NIGHT, REPO, TOAD, load_48k
from tests.edge.daemon.test_daemon import log_events, unit_config

RATE = 48_000


def run_command(bundle: Path, labels: Path, log_dir: Path, recording: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge", "run", "--labels", str(labels), "--bundle", str(bundle), "--log-dir",
            str(log_dir), "--input", str(recording), "--threshold", "0.5", "--score-mode", "softmax",
            "--set", "unit.unit_id=truth", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def column(table, name: str) -> list[str]:
    index = table.columns.index(name)
    return [row[index] for row in table.rows]


class FailingBackend:
    """Fault injection: the real backend, raising like ONNX Runtime's session.run for the first ``failures`` calls."""

    def __init__(self, inner, failures: int) -> None:
        self.inner, self.failures = inner, failures
        self.name, self.precision = inner.name, inner.precision

    def embed(self, features: np.ndarray) -> np.ndarray:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned")
        return self.inner.embed(features)


@pytest.mark.parametrize(("failures", "exit_code"), [(1, 0), (100, EXIT_PIPELINE)], ids=["transient", "fatal"])
def test_any_inference_exception_is_recorded_recovered_or_fatal(example_bundle: Path,
                                                                example_labels: tuple[Path, Path],
                                                                toad_in_night: Path, tmp_path: Path,
                                                                failures: int, exit_code: int) -> None:
    daemon = build_daemon(unit_config(example_bundle, example_labels, tmp_path), InputOptions(toad_in_night, fast=True))
    failing = FailingBackend(daemon.stages.backend, failures)
    healthy = daemon.stages
    daemon.stages = replace(healthy, backend=failing)
    daemon.stages_factory = lambda: replace(healthy, backend=failing)
    assert daemon.run() == exit_code
    failed = [r for r in log_events(tmp_path) if r["kind"] == "pipeline_failed"]
    assert failed and all("ONNXRuntimeError" in r["reason"] for r in failed)
    stop = [r for r in log_events(tmp_path) if r["kind"] == "stop"][0]
    assert stop["exit_code"] == exit_code
    effort = read_card(tmp_path).effort
    analysed = sum(float(s) for s in column(effort, "analysed_s"))
    if exit_code == 0:
        assert [r["action"] for r in failed] == ["rebuild_stages"]
        assert analysed == pytest.approx(60.0), "the failed batch was retried, not skipped"
    else:
        assert failed[-1]["action"] == "exit" and len(failed) == daemon.options.max_pipeline_restarts + 2


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_run_input_unreadable_file_is_one_line_and_non_zero(example_bundle: Path, example_labels: tuple[Path, Path],
                                                            tmp_path: Path, kind: str) -> None:
    recording = tmp_path / "field.wav"
    if kind == "garbage":
        recording.write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    done = subprocess.run(run_command(example_bundle, example_labels[0], tmp_path / "log", recording, "--fast"),
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "field.wav" in errors[0], done.stderr
    failed = [r for r, _ in read_card(tmp_path / "log").events if r["kind"] == "stream_open_failed"]
    assert failed and "field.wav" in failed[0]["reason"]


def covered(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside the union of ``spans``."""
    position = start
    for first, last in sorted(spans):
        if first <= position < last:
            position = last
        if position >= end:
            return True
    return position >= end


@pytest.fixture(scope="module")
def alternating(tmp_path_factory: pytest.TempPathFactory, shared_audio: Path) -> Path:
    """200 s of 4 s toad / 4 s night, so detections close every few seconds."""
    toad, night = load_48k(shared_audio / TOAD), load_48k(shared_audio / NIGHT)
    parts = []
    for i in range(25):
        toad_at, night_at = (i % 5) * 4 * RATE, (i % 10) * 4 * RATE
        parts += [toad[toad_at : toad_at + 4 * RATE], night[night_at : night_at + 4 * RATE]]
    path = tmp_path_factory.mktemp("alternating") / "alternating.wav"
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return path


def test_after_kill_9_no_detection_lies_in_time_the_effort_table_calls_unanalysed(
        example_bundle: Path, example_labels: tuple[Path, Path], alternating: Path, tmp_path: Path) -> None:
    rng = random.Random(10)
    killed = 0
    for run in range(8):
        card = tmp_path / f"card{run}"
        process = subprocess.Popen(run_command(example_bundle, example_labels[0], card, alternating, "--fast",
                                               "--window", "2", "--hop", "1"),
                                   cwd=REPO, env=env(), stderr=subprocess.DEVNULL)
        wanted = rng.randint(1, 25)

        def enough(contents: CardContents, wanted: int = wanted, process: subprocess.Popen = process) -> bool:
            return len(contents.detections.rows) >= wanted or process.poll() is not None

        wait_for_card(card, enough, 120, f"{wanted} detections")
        process.send_signal(signal.SIGKILL)
        killed += process.wait(timeout=30) == -signal.SIGKILL
        contents = read_card(card)
        spans: dict[str, list[tuple[int, int]]] = {}
        effort = contents.effort
        for stream, first, last in zip(column(effort, "stream"), column(effort, "first_sample"),
                                       column(effort, "last_sample")):
            spans.setdefault(str(stream), []).append((int(str(first)), int(str(last))))
        detections = contents.detections
        assert detections.rows
        for stream, start, end in zip(column(detections, "stream"), column(detections, "start_sample"),
                                      column(detections, "end_sample")):
            assert covered(spans.get(str(stream), []), int(str(start)), int(str(end))), (
                f"run {run}: detection {start}-{end} lies in time the effort table says was not analysed")
    assert killed >= 6, "most runs were killed mid-way, not finished"


def test_full_card_until_stop_loses_nothing_thanks_to_the_reserve(example_bundle: Path,
                                                                  example_labels: tuple[Path, Path],
                                                                  toad_in_night: Path, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "card", "2m") as card:
        command = run_command(example_bundle, example_labels[0], card, toad_in_night, "--heartbeat", "0.5",
                              "--window", "4", "--hop", "2", "--set", "storage.governor.min_free_mb=0",
                              "--set", f"storage.fallback_dir={tmp_path / 'state'}")
        process = subprocess.Popen(command, cwd=REPO, env=env(), stderr=subprocess.PIPE, text=True)
        wait_for_card(card, first_health(lambda r: r["analysed_until_s"] >= 4), 120, "a heartbeat after analysis")
        fill_up(card)
        wait_for_card(card, first_health(lambda r: r["analysed_until_s"] >= 4), 5)  # still readable while full
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=90)
        contents = read_card(card)
    events = [r for r, _ in contents.events]
    stop = [r for r in events if r["kind"] == "stop"]
    assert stop, "the stop event reached the card through the reserved space"
    assert "reserve_released" in [r["kind"] for r in events]
    assert stop[0]["rows_not_on_card"] == {"effort": 0, "detections": 0, "events": 0, "health": 0, "embeddings": 0}
    assert code == 0, process.stderr.read() if process.stderr else ""
    analysed = sum(float(s) for s in column(contents.effort, "analysed_s"))
    assert analysed == pytest.approx(stop[0]["sample"] / RATE, abs=1e-3), "every analysed second is on the card"


def test_card_full_at_boot_puts_rows_in_the_fallback_and_says_so(example_bundle: Path,
                                                                 example_labels: tuple[Path, Path],
                                                                 toad_in_night: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with small_filesystem(tmp_path / "card", "1m") as card:
        fill_up(card)
        command = run_command(example_bundle, example_labels[0], card, toad_in_night, "--fast",
                              "--set", "storage.governor.min_free_mb=0", "--set", f"storage.fallback_dir={state}")
        done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_CARD_INCOMPLETE, done.stderr
    assert "Traceback" not in done.stderr
    spilled = [json.loads(line) for path in state.glob(f"*{FALLBACK_SUFFIX}")
               for line in path.read_text(encoding="utf-8").splitlines()]
    by_kind: dict[str, int] = {}
    for row in spilled:
        by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + 1
    events = [json.loads(row["line"]) for row in spilled if row["kind"] == "events"]
    stop = [e for e in events if e["kind"] == "stop"][0]
    assert stop["exit_code"] == EXIT_CARD_INCOMPLETE and stop["fallback_file"]
    for kind, count in stop["rows_not_on_card"].items():
        # the stop and log_close events themselves were queued after the count was taken
        assert by_kind.get(kind, 0) - (2 if kind == "events" else 0) == count, kind
    assert stop["rows_not_on_card"]["detections"] > 0 and stop["rows_not_on_card"]["effort"] > 0
    effort_lines = [row["line"] for row in spilled if row["kind"] == "effort"]
    assert sum(float(line.strip().split(",")[-1]) for line in effort_lines) == pytest.approx(60.0)


@pytest.fixture(scope="module")
def long_event_run(example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 60 s recording with clips on (FLAC, the default) and a threshold every window passes."""
    log_dir = tmp_path_factory.mktemp("clips")
    config = unit_config(example_bundle, example_labels, log_dir, **{
        "analysis.threshold": 0.0, "storage.clips.mode": "detections", "storage.clips.max_per_hour": 0,
        "storage.governor.min_free_mb": 0, "storage.governor.clips_min_free_percent": 0})
    assert build_daemon(config, InputOptions(toad_in_night, fast=True)).run() == 0
    return log_dir


def test_clips_of_long_events_cover_the_event(long_event_run: Path) -> None:
    detections = read_card(long_event_run).detections
    events = {(label, int(str(s))): int(str(e)) for label, s, e in zip(
        column(detections, "label"), column(detections, "start_sample"), column(detections, "end_sample"))}
    assert max(end - start for (_, start), end in events.items()) > 30 * RATE, "precondition: an event > 30 s"
    clips = sorted((long_event_run / "clips").rglob("*.flac"))
    assert clips and not list((long_event_run / "clips").rglob("*.wav"))
    for clip in clips:
        assert sf.info(str(clip)).format == "FLAC"
        guano = read_guano(clip)
        start, end = int(guano["BIOL|Event Start Sample"]), int(guano["BIOL|Event End Sample"])
        clip_start = int(guano["BIOL|Clip Start Sample"])
        clip_end = clip_start + sf.info(str(clip)).frames
        assert clip_end >= end, clip.name
        assert clip_start <= start or float(guano["BIOL|Cut Start S"]) > 0, clip.name


def test_one_clip_per_detected_span_however_many_labels_fired(long_event_run: Path) -> None:
    detections = read_card(long_event_run).detections
    spans = list(zip(column(detections, "start_sample"), column(detections, "end_sample")))
    assert len(set(spans)) < len(spans), "precondition: two labels detected over the same audio"
    clips = sorted((long_event_run / "clips").rglob("*.flac"))
    clipped = [(read_guano(c)["BIOL|Event Start Sample"], read_guano(c)["BIOL|Event End Sample"]) for c in clips]
    assert len(clipped) == len(set(clipped)) == len({(str(s), str(e)) for s, e in spans})


def test_clip_limits_per_hour_and_folder_size_are_enforced(example_bundle: Path, example_labels: tuple[Path, Path],
                                                           alternating: Path, tmp_path: Path) -> None:
    settings = {"storage.clips.mode": "detections", "storage.governor.min_free_mb": 0,
                "storage.governor.clips_min_free_percent": 0, "storage.clips.pre_s": 0, "storage.clips.post_s": 0,
                "analysis.window_s": 2, "analysis.hop_s": 1}

    def run(name: str, **extra: object) -> tuple[list[Path], list[str]]:
        config = unit_config(example_bundle, example_labels, tmp_path / name, **{**settings, **extra})
        assert build_daemon(config, InputOptions(alternating, fast=True)).run() == 0
        contents = read_card(tmp_path / name)
        hours = [utc[:13] for utc in column(contents.detections, "utc")]
        assert len(hours) > 4, "precondition: many detections"
        return sorted((tmp_path / name / "clips").rglob("*.flac")), hours

    clips, hours = run("hourly", **{"storage.clips.max_per_hour": 2})
    assert len(clips) == sum(min(2, hours.count(hour)) for hour in set(hours))
    assert "clips_hour_limit" in [r["kind"] for r in log_events(tmp_path / "hourly")]
    cap_mb = 2.5 * max(p.stat().st_size for p in clips) / (1 << 20)
    capped, hours = run("capped", **{"storage.clips.max_per_hour": 0, "storage.governor.max_clips_mb": cap_mb})
    assert 2 <= len(capped) < len(hours)
    sizes = [p.stat().st_size for p in sorted(capped, key=lambda p: p.name)]
    assert sum(sizes[:-1]) < cap_mb * (1 << 20), "a clip is saved only while the folder is under the cap"
    assert "clips_folder_full" in [r["kind"] for r in log_events(tmp_path / "capped")]


def test_boot_record_holds_the_whole_resolved_config_and_the_power_outcome(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    marker = tmp_path / "clocks-pinned"
    script = tools / "jetson_clocks"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
    script.chmod(0o755)
    command = run_command(example_bundle, example_labels[0], tmp_path / "log", toad_in_night, "--fast",
                          "--set", "power.jetson_clocks=true", "--set", "analysis.cooldown_s=7.5")
    done = subprocess.run(command, cwd=REPO, env={**env(), "PATH": f"{tools}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    boot = read_card(tmp_path / "log").boots[0]["boot_info"]
    assert marker.exists() and boot["power"] == {"jetson_clocks": "applied"}
    config = boot["config"]
    assert config["analysis"]["cooldown_s"] == 7.5 and config["analysis"]["score_mode"] == "softmax"
    assert config["audio"]["highpass_hz"] == 0.0 and config["schedule"]["mode"] == "always"
    assert config["power"]["jetson_clocks"] is True


def test_a_high_pass_the_precision_gates_never_saw_is_refused(example_bundle: Path,
                                                              example_labels: tuple[Path, Path],
                                                              toad_in_night: Path, tmp_path: Path) -> None:
    command = run_command(example_bundle, example_labels[0], tmp_path / "log", toad_in_night, "--fast",
                          "--set", "audio.highpass_hz=100")
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "audio.highpass_hz is 100 Hz" in done.stderr and "hint: set audio.highpass_hz: 0" in done.stderr


class OffUntilReleased:
    """A schedule (the daemon's is_on/next_change contract) that turns off at ``off_from`` until released."""

    def __init__(self, off_from: datetime) -> None:
        self.off_from = off_from
        self.released = threading.Event()

    def is_on(self, now: datetime) -> bool:
        return now < self.off_from or self.released.is_set()

    def next_change(self, now: datetime) -> datetime:
        return max(now, self.off_from) + timedelta(seconds=0.2)


def test_microphone_failing_to_reopen_when_the_schedule_turns_on_is_recorded_and_non_zero(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    recording = tmp_path / "input.wav"
    shutil.copy(toad_in_night, recording)
    daemon = build_daemon(unit_config(example_bundle, example_labels, tmp_path / "log"),
                          InputOptions(recording, fast=False))
    schedule = OffUntilReleased(datetime.now(timezone.utc) + timedelta(seconds=1))
    daemon.schedule = schedule  # type: ignore[assignment]
    daemon.options = replace(daemon.options, reopen_give_up_s=1.0)

    def unplug_while_off() -> None:
        wait_for_card(tmp_path / "log", lambda c: any(r["kind"] == "scheduled_off" for r, _ in c.events), 60,
                      "scheduled_off event")
        recording.unlink()  # the device is gone when the schedule turns it back on
        schedule.released.set()

    threading.Thread(target=unplug_while_off, daemon=True).start()
    assert daemon.run() == EXIT_NO_AUDIO
    events = log_events(tmp_path / "log")
    kinds = [r["kind"] for r in events]
    assert kinds.index("scheduled_off") < kinds.index("stream_open_failed") < kinds.index("giving_up")
    assert [r for r in events if r["kind"] == "stop"][0]["exit_code"] == EXIT_NO_AUDIO


def test_clip_buffer_keeps_an_open_event_and_says_when_it_had_to_cut() -> None:
    from edge.audio.chunk import AudioChunk
    from edge.stream.clip_buffer import ClipBuffer

    buffer = ClipBuffer(RATE, keep_min_samples=30 * RATE, max_clip_s=120.0)
    for second in range(200):  # an event open since sample 0
        buffer.push(AudioChunk(np.full(RATE, second, np.float32), RATE, second * RATE), needed_from=0)
    clip = buffer.cut(0, 200 * RATE)
    assert clip is not None and clip.cut_samples == 80 * RATE and clip.audio.shape[0] == 120 * RATE
    short = ClipBuffer(RATE, keep_min_samples=30 * RATE)
    for second in range(100):  # no open event: only the last 30 s are kept
        short.push(AudioChunk(np.full(RATE, second, np.float32), RATE, second * RATE), needed_from=None)
    assert short.cut(0, 100 * RATE).start_sample == 70 * RATE  # type: ignore[union-attr]
    whole = ClipBuffer(RATE, keep_min_samples=30 * RATE)
    for second in range(60):  # an event open since 5 s: all of it is kept, nothing cut
        whole.push(AudioChunk(np.full(RATE, second, np.float32), RATE, second * RATE), needed_from=5 * RATE)
    event = whole.cut(5 * RATE, 60 * RATE)
    assert event is not None and event.cut_samples == 0 and event.start_sample == 5 * RATE
