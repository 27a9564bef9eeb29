"""The daemon on a file source: streaming equals offline, chunk-size invariance, lag degradation, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.audio.files import stream_file
from edge.bundle import open_bundle
from edge.daemon import Daemon
from edge.detect import DetectionEvent, DetectorOptions, EventDetector
from edge.labels import read_labels
from edge.pipeline import batched_windows, build_stages, score_windows
from edge.run_setup import RunSettings, build_daemon
from edge.windowing import Windower
from tests.conftest import REPO

RATE = 48_000


def records(log_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "run.jsonl").read_text().splitlines()]


def events_of(log_dir: Path) -> list[tuple[str, int, int]]:
    return [(r["label"], r["start_sample"], r["end_sample"]) for r in records(log_dir) if r["type"] == "detection"]


def settings_for(example_bundle: Path, example_labels: tuple[Path, Path], recording: Path, log_dir: Path,
                 **overrides) -> RunSettings:
    base = RunSettings(labels=example_labels[0], bundle=example_bundle, log_dir=log_dir, threshold=0.5,
                       score_mode="softmax", input_file=recording, fast=True, heartbeat_s=3600)
    return replace(base, **overrides)


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
    settings = settings_for(example_bundle, example_labels, toad_in_night, tmp_path)
    assert build_daemon(settings).run() == 0
    streamed = events_of(tmp_path)
    offline = offline_events(example_bundle, example_labels[0], toad_in_night, DetectorOptions(enter=0.5),
                             10 * RATE, 5 * RATE)
    assert sorted(streamed) == sorted(offline)
    assert [e for e in streamed if e[0] == "toad"] == [("toad", 35 * RATE, 55 * RATE)]
    effort = [(r["start_sample"], r["end_sample"]) for r in records(tmp_path) if r["type"] == "effort"]
    assert effort[0][0] == 0 and effort[-1][1] == 60 * RATE
    assert all(a[1] == b[0] for a, b in zip(effort, effort[1:]))


@pytest.mark.parametrize("chunk", [1, 441, 4096, 48_000, 96_000])
def test_chunk_sizes_give_identical_detections(chunk: int, example_bundle: Path,
                                               example_labels: tuple[Path, Path], toad_in_night: Path,
                                               tmp_path: Path) -> None:
    reference_dir, chunked_dir = tmp_path / "ref", tmp_path / "chunked"
    build_daemon(settings_for(example_bundle, example_labels, toad_in_night, reference_dir,
                              hop_s=2.5, confirm_n=2, confirm_m=3)).run()
    recording = toad_in_night
    if chunk == 1:  # one sample at a time is slow in Python: use the first 20 s
        import soundfile as sf

        recording = tmp_path / "short.wav"
        data, rate = sf.read(toad_in_night, dtype="float32")
        sf.write(recording, data[: 20 * rate], rate, subtype="FLOAT")
        reference_dir = tmp_path / "ref-short"
        build_daemon(settings_for(example_bundle, example_labels, recording, reference_dir,
                                  hop_s=2.5, confirm_n=2, confirm_m=3)).run()
    build_daemon(settings_for(example_bundle, example_labels, recording, chunked_dir, hop_s=2.5,
                              confirm_n=2, confirm_m=3, chunk_samples=chunk)).run()
    assert events_of(chunked_dir) == events_of(reference_dir)
    assert events_of(reference_dir)


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
    settings = settings_for(example_bundle, example_labels, toad_in_night, tmp_path, fast=False, window_s=2.0,
                            hop_s=0.5, lag_bound_s=1.0, max_batch=1, heartbeat_s=1.0, chunk_samples=RATE // 10)
    daemon = build_daemon(settings)
    factory = daemon.stages_factory
    daemon.stages = replace(factory(), backend=SlowBackend(factory().backend, 1.0))
    source = daemon.source

    def stop_after(seconds: float) -> None:
        time.sleep(seconds)
        daemon.stop.set()

    import threading

    threading.Thread(target=stop_after, args=(10.0,), daemon=True).start()
    assert daemon.run() == 0
    assert source is daemon.source
    log = records(tmp_path)
    degraded = [r for r in log if r.get("kind") == "degraded"]
    assert degraded and degraded[0]["lag_s"] > 1.0 and degraded[0]["hop_to_s"] > degraded[0]["hop_from_s"]
    health_lags = [r["lag_s"] for r in log if r["type"] == "health"]
    assert max(health_lags) > 1.0


def test_sigterm_mid_window_flushes_everything(example_bundle: Path, example_labels: tuple[Path, Path],
                                               toad_in_night: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "edge", "run", "--labels", str(example_labels[0]), "--bundle",
               str(example_bundle), "--log-dir", str(tmp_path), "--input", str(toad_in_night), "--threshold",
               "0.5", "--score-mode", "softmax", "--heartbeat", "3600"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stderr=subprocess.PIPE, text=True)
    time.sleep(13.3)  # real-time pace: two windows done, the third half-filled
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    log = records(tmp_path)
    stop = [r for r in log if r.get("kind") == "stop"]
    assert stop and stop[0]["exit_code"] == 0
    effort_end = max(r["end_sample"] for r in log if r["type"] == "effort")
    assert effort_end == stop[0]["sample"] and effort_end >= 10 * RATE
    assert {e[0] for e in events_of(tmp_path)} == {"night"}
    assert max(e[2] for e in events_of(tmp_path)) == effort_end


def test_daemon_type_is_the_public_entry_point() -> None:
    assert Daemon.run.__doc__
