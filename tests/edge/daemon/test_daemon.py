"""The daemon on a file source: streaming equals offline, chunk-size invariance, lag degradation, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from desk.collect.cards import CardContents, read_card
from edge.audio.file_stream import DEFAULT_CHUNK_SAMPLES
from edge.audio.files import stream_file
from edge.audio.windowing import Windower
from edge.config.loader import resolve_config
from edge.config.schema import UnitConfig
from edge.model.bundle import open_bundle
from edge.ops.setup import InputOptions, build_daemon
from edge.scoring.labels import read_labels
from edge.stream.detector import DetectionEvent, DetectorOptions, EventDetector
from edge.stream.pipeline import batched_windows, build_stages, score_windows
from tests.card_wait import StderrLines, first_event, first_health, wait_for_card
from tests.conftest import REPO

RATE = 48_000


def card(log_dir: Path) -> CardContents:
    contents = read_card(log_dir)
    assert not [f for f in contents.findings if f.severity == "error"], contents.findings
    return contents


def events_of(log_dir: Path) -> list[tuple[str, int, int]]:
    table = card(log_dir).detections
    cols = {name: i for i, name in enumerate(table.columns)}
    return [(r[cols["label"]], int(r[cols["start_sample"]]), int(r[cols["end_sample"]])) for r in table.rows]


def log_events(log_dir: Path) -> list[dict]:
    return [record for record, _ in card(log_dir).events]


def health_of(log_dir: Path) -> list[dict]:
    return [record for record, _ in card(log_dir).health]


def unit_config(example_bundle: Path, example_labels: tuple[Path, Path], log_dir: Path, **overrides) -> UnitConfig:
    base = {"model.bundle": str(example_bundle), "analysis.labels": str(example_labels[0]),
            "storage.log_dir": str(log_dir), "analysis.threshold": 0.5, "analysis.score_mode": "softmax",
            "health.heartbeat_s": 3600, "unit.unit_id": "test-unit"}
    return resolve_config(None, None, {**base, **overrides})


def run_file(config: UnitConfig, recording: Path, fast: bool = True, chunk: int = DEFAULT_CHUNK_SAMPLES) -> int:
    return build_daemon(config, InputOptions(recording, fast=fast, chunk_samples=chunk)).run()


def offline_events(example_bundle: Path, labels_path: Path, recording: Path, options: DetectorOptions,
                   window: int, hop: int) -> list[tuple[str, int, int]]:
    """The same analysis done the `analyze` way: whole file, windows in batches, detector at the end."""
    bundle = open_bundle(example_bundle)
    labels = read_labels(labels_path)
    stages = build_stages(bundle, labels, str(labels_path), score_mode="softmax")
    detector = EventDetector(labels.names, options)
    events: list[DetectionEvent] = []
    for windows in batched_windows(stream_file(recording, RATE), Windower(window, hop), 8):
        scores = score_windows(stages, windows)
        events += detector.update([w.start_sample for w in windows], [w.end_sample for w in windows], scores)
    events += detector.flush()
    return [(e.label, e.start_sample, e.end_sample) for e in events]


def test_streaming_equals_offline_and_finds_the_toad(example_bundle: Path, example_labels: tuple[Path, Path],
                                                     toad_in_night: Path, tmp_path: Path) -> None:
    assert run_file(unit_config(example_bundle, example_labels, tmp_path), toad_in_night) == 0
    streamed = events_of(tmp_path)
    offline = offline_events(example_bundle, example_labels[0], toad_in_night, DetectorOptions(enter=0.5),
                             10 * RATE, 5 * RATE)
    assert sorted(streamed) == sorted(offline)
    assert [e for e in streamed if e[0] == "toad"] == [("toad", 35 * RATE, 55 * RATE)]
    effort = card(tmp_path).effort
    cols = {name: i for i, name in enumerate(effort.columns)}
    assert sum(float(r[cols["analysed_s"]]) for r in effort.rows) == pytest.approx(60.0)


@pytest.mark.parametrize("chunk", [1, 441, 4096, 48_000, 96_000])
def test_chunk_sizes_give_identical_detections(chunk: int, example_bundle: Path,
                                               example_labels: tuple[Path, Path], toad_in_night: Path,
                                               tmp_path: Path) -> None:
    config = unit_config(example_bundle, example_labels, tmp_path / "ref", **{
        "analysis.hop_s": 2.5, "analysis.confirm_n": 2, "analysis.confirm_m": 3})
    recording = toad_in_night
    if chunk == 1:  # one sample at a time is slow in Python: use the first 20 s
        import soundfile as sf

        recording = tmp_path / "short.wav"
        data, rate = sf.read(toad_in_night, dtype="float32")
        sf.write(recording, data[: 20 * rate], rate, subtype="FLOAT")
    run_file(config, recording)
    chunked = config.model_copy(update={"storage": config.storage.model_copy(update={"log_dir": tmp_path / "c"})})
    run_file(chunked, recording, chunk=chunk)
    assert events_of(tmp_path / "c") == events_of(tmp_path / "ref")
    assert events_of(tmp_path / "ref")


class SlowBackend:
    """Fault injection: the real backend, delayed like an overloaded CPU."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.name, self.precision = inner.name, inner.precision

    def embed(self, features: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s * features.shape[0])
        return self.inner.embed(features)


def test_slow_backend_builds_lag_and_the_hop_degrades_on_record(example_bundle: Path,
                                                                example_labels: tuple[Path, Path],
                                                                toad_in_night: Path, tmp_path: Path) -> None:
    config = unit_config(example_bundle, example_labels, tmp_path, **{
        "analysis.window_s": 2.0, "analysis.hop_s": 0.5, "model.max_batch": 1, "health.heartbeat_s": 1.0})
    daemon = build_daemon(config, InputOptions(toad_in_night, fast=False, chunk_samples=RATE // 10))
    daemon.options = replace(daemon.options, lag_bound_s=1.0)
    daemon.stages = replace(daemon.stages, backend=SlowBackend(daemon.stages.backend, 1.0))

    def stop_once_lag_is_on_record() -> None:
        wait_for_card(tmp_path, lambda c: first_event("degraded")(c) and first_health(lambda r: r["lag_s"] > 1.0)(c),
                      120, "degraded event and a lagging heartbeat")
        daemon.stop.set()

    threading.Thread(target=stop_once_lag_is_on_record, daemon=True).start()
    assert daemon.run() == 0
    degraded = [r for r in log_events(tmp_path) if r["kind"] == "degraded"]
    assert degraded and degraded[0]["lag_s"] > 1.0 and degraded[0]["hop_to_s"] > degraded[0]["hop_from_s"]
    assert max(r["lag_s"] for r in health_of(tmp_path)) > 1.0


def test_sigterm_mid_window_flushes_everything(example_bundle: Path, example_labels: tuple[Path, Path],
                                               toad_in_night: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edge", "run", "--labels", str(example_labels[0]), "--bundle",
               str(example_bundle), "--log-dir", str(tmp_path), "--input", str(toad_in_night), "--threshold",
               "0.5", "--score-mode", "softmax", "--heartbeat", "0.2", "--set", "unit.unit_id=test-unit"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stderr=subprocess.PIPE, text=True)
    # Real-time pace: wait until the card shows the first window analysed and audio of the next one received.
    mid_window = wait_for_card(tmp_path, first_health(
        lambda r: r["analysed_until_s"] >= 10 and r["samples_received"] > r["analysed_until_s"] * RATE), 120,
        "heartbeat after the first window")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    stop = [r for r in log_events(tmp_path) if r["kind"] == "stop"]
    assert stop and stop[0]["exit_code"] == 0
    effort = card(tmp_path).effort
    cols = {name: i for i, name in enumerate(effort.columns)}
    effort_end = max(int(r[cols["last_sample"]]) for r in effort.rows)
    # the half-filled window's audio was analysed too: effort reaches the last sample received
    assert stop[0]["sample"] >= mid_window["samples_received"] > 10 * RATE
    assert stop[0]["sample"] - effort_end <= 1
    assert max(e[2] for e in events_of(tmp_path)) == stop[0]["sample"]


def test_full_card_mid_run_keeps_analysing_and_records_the_gap(example_bundle: Path,
                                                               example_labels: tuple[Path, Path],
                                                               toad_in_night: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from tests.cardlog_support import fill_up, small_filesystem

    recording = tmp_path / "twenty_s.wav"
    data, rate = sf.read(toad_in_night, dtype="float32")
    sf.write(recording, data[: 20 * rate], rate, subtype="PCM_16")
    with small_filesystem(tmp_path / "card", "2m") as card:
        command = [sys.executable, "-m", "edge", "run", "--labels", str(example_labels[0]), "--bundle",
                   str(example_bundle), "--log-dir", str(card), "--input", str(recording), "--threshold", "0.5",
                   "--score-mode", "softmax", "--heartbeat", "0.5", "--window", "4", "--hop", "2",
                   "--set", "unit.unit_id=full-card", "--set", "storage.governor.min_free_mb=0",
                   "--set", f"storage.fallback_dir={tmp_path / 'unwritten'}"]
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                   stderr=subprocess.PIPE, text=True)
        stderr = StderrLines(process)
        wait_for_card(card, first_health(lambda r: r["analysed_until_s"] > 0), 120, "heartbeat with audio analysed")
        filler = fill_up(card)
        stderr.wait_for("disk_full", 60)
        filler.unlink()
        assert process.wait(timeout=60) == 0, stderr.text()
        kinds = [record["kind"] for record in log_events(card)]
        effort = read_card(card).effort
    assert "disk_full" in kinds and "disk_space_returned" in kinds
    cols = {name: i for i, name in enumerate(effort.columns)}
    assert sum(float(r[cols["analysed_s"]]) for r in effort.rows) == pytest.approx(20.0)
    assert kinds[-1] in ("stop", "log_close")
