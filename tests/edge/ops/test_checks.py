"""``check``: each row on real bundles, real recordings and real files; FAIL makes the command exit non-zero."""

from __future__ import annotations

import datetime as dt
import math
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edge.audio.files import read_file
from edge.cli import app
from edge.config.loader import UnitConfig, resolve_config
from edge.model.bundle import open_bundle
from edge.ops.checks import (
    CheckRow,
    Status,
    check_clock,
    check_microphone,
    check_model,
    check_schedule,
    check_storage,
    check_temperature,
    read_sync_state,
)
from tests.conftest import SINK

runner = CliRunner()
TOAD = "kitzeslab__opensoundscape/great_plains_toad.wav"


def config_for(tmp_path: Path, bundle: Path, labels: Path, **overrides: object) -> UnitConfig:
    (tmp_path / "logs").mkdir(exist_ok=True)  # the mounted card
    settings = {"model.bundle": str(bundle), "analysis.labels": str(labels), "storage.log_dir": str(tmp_path / "logs"),
                "storage.governor.min_free_mb": 1, "storage.governor.clips_min_free_percent": 0, **overrides}
    return resolve_config(None, None, settings)


def thermal_file(tmp_path: Path, millidegrees: str, name: str = "temp") -> Path:
    path = tmp_path / name
    path.write_text(millidegrees + "\n", encoding="utf-8")
    return path


def test_check_passes_on_a_good_unit_and_hears_the_null_sink_microphone(
        pulse: None, tmp_path: Path, example_bundle: Path, example_labels: tuple[Path, Path],
        shared_audio: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_SOURCE", f"{SINK}.monitor")
    (tmp_path / "logs").mkdir()  # the mounted card
    unit = {"audio": {"device": "pulse"}, "model": {"bundle": str(example_bundle)},
            "analysis": {"labels": str(example_labels[0])},
            "storage": {"log_dir": str(tmp_path / "logs"), "governor": {"min_free_mb": 1,
                                                                         "clips_min_free_percent": 0}},
            "health": {"thermal_paths": [str(thermal_file(tmp_path, "45000"))]}}
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(unit), encoding="utf-8")
    player = subprocess.Popen(["paplay", f"--device={SINK}", str(shared_audio / TOAD)])
    try:
        time.sleep(0.5)
        result = runner.invoke(app, ["check", "--config", str(path)])
    finally:
        player.kill()
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3
             and line.split("│")[1].strip()}
    assert "PASS" in lines["bundle"] and "PASS" in lines["model"] and "ort fp32" in lines["model"]
    assert "PASS" in lines["microphone"] and "48000 Hz" in lines["microphone"]
    level = float(re.search(r"RMS (-?[0-9.]+) dBFS", result.stdout).group(1))  # type: ignore[union-attr]
    assert -60 < level < -3
    assert "PASS" in lines["temperature"] and "45.0 C" in lines["temperature"]


def test_corrupted_bundle_fails_the_check(tmp_path: Path, bundle_copy: Path,
                                         example_labels: tuple[Path, Path]) -> None:
    model = next(bundle_copy.glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    unit = {"model": {"bundle": str(bundle_copy)}, "analysis": {"labels": str(example_labels[0])},
            "storage": {"log_dir": str(tmp_path)}}
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(unit), encoding="utf-8")
    result = runner.invoke(app, ["check", "--config", str(path)])
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "corrupted" in result.stdout
    assert "Traceback" not in result.output


def test_model_uses_the_first_preferred_precision_the_bundle_has(tmp_path: Path, example_bundle: Path,
                                                                 example_labels: tuple[Path, Path]) -> None:
    bundle = open_bundle(example_bundle)
    row = check_model(config_for(tmp_path, example_bundle, example_labels[0], **{"model.precision": ["int8", "fp32"]}),
                      bundle)
    assert row.status is Status.PASS and "fp32" in row.detail and "2 labels" in row.detail
    none = check_model(config_for(tmp_path, example_bundle, example_labels[0], **{"model.precision": ["int8"]}),
                       bundle)
    assert none.status is Status.FAIL and "none of int8" in none.detail


def test_labels_or_prompts_without_embeddings_fail(tmp_path: Path, example_bundle: Path,
                                                  example_labels: tuple[Path, Path]) -> None:
    bundle = open_bundle(example_bundle)
    row = check_model(config_for(tmp_path, example_bundle, example_labels[0],
                                 **{"analysis.privacy_prompts": ["human speech"]}), bundle)
    assert row.status is Status.FAIL and "'human speech'" in row.detail
    assert "printf" in row.detail and "biolingual-export labels" in row.detail  # the command that fixes it


@pytest.fixture(scope="module")
def toad(shared_audio: Path) -> np.ndarray:
    return read_file(shared_audio / TOAD, 48_000)[: 3 * 48_000]


@pytest.fixture
def plain_config(tmp_path: Path) -> UnitConfig:
    labels = tmp_path / "labels.txt"
    labels.write_text("toad\n", encoding="utf-8")
    return config_for(tmp_path, tmp_path / "bundle", labels)


def test_microphone_reports_the_level_of_a_real_recording(toad: np.ndarray, plain_config: UnitConfig) -> None:
    row = check_microphone(lambda: (48_000, toad), plain_config)
    rms = 20 * math.log10(float(np.sqrt(np.mean(toad.astype(np.float64) ** 2))))
    assert row.status is Status.PASS
    assert f"48000 Hz, 3.0 s, RMS {rms:.1f} dBFS" in row.detail


def test_microphone_faults(toad: np.ndarray, plain_config: UnitConfig) -> None:
    silence = check_microphone(lambda: (48_000, np.zeros(48_000, np.float32)), plain_config)
    assert silence.status is Status.FAIL and "flatline" in silence.detail
    loud = np.clip(toad / np.abs(toad).max() * 4, -1, 1)
    clipped = check_microphone(lambda: (48_000, loud), plain_config)
    assert clipped.status is Status.WARN and "clipping" in clipped.detail
    other_rate = check_microphone(lambda: (44_100, toad), plain_config)
    assert other_rate.status is Status.WARN and "config asks 48000 Hz" in other_rate.detail
    assert check_microphone(lambda: (48_000, np.array([], np.float32)), plain_config).status is Status.FAIL
    assert check_microphone(None, plain_config).status is Status.SKIP


def test_microphone_analyses_the_configured_channel(tmp_path: Path, toad: np.ndarray) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("toad\n", encoding="utf-8")
    config = config_for(tmp_path, tmp_path / "b", labels, **{"audio.channels": 2, "audio.channel": 1})
    stereo = np.stack([np.zeros_like(toad), toad], axis=1)  # channel 0 is dead, channel 1 has the toad
    assert check_microphone(lambda: (48_000, stereo), config).status is Status.PASS


def test_clock_states() -> None:
    now = dt.datetime(2025, 5, 14, 12, tzinfo=dt.timezone.utc)
    assert check_clock(now, "yes").status is Status.PASS
    assert check_clock(now, "no").status is Status.WARN
    assert check_clock(now, None).status is Status.WARN
    assert check_clock(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), "yes").status is Status.FAIL
    assert read_sync_state() in ("yes", "no", None)  # whatever this machine says, without raising


def test_temperature_against_the_limits(tmp_path: Path, plain_config: UnitConfig) -> None:
    def row(*files: Path) -> CheckRow:
        health = plain_config.health.model_copy(update={"thermal_paths": list(files)})
        return check_temperature(plain_config.model_copy(update={"health": health}))

    assert row().status is Status.SKIP
    assert row(tmp_path / "missing").status is Status.WARN
    warm = row(thermal_file(tmp_path, "41000", "a"), thermal_file(tmp_path, "78500", "b"))
    assert warm.status is Status.WARN and warm.detail.startswith("78.5 C")
    assert row(thermal_file(tmp_path, "97000", "c")).status is Status.FAIL
    assert row(thermal_file(tmp_path, "not a number", "d")).status is Status.WARN


def test_storage_below_the_reserve_fails(tmp_path: Path, plain_config: UnitConfig) -> None:
    assert check_storage(plain_config).status is Status.PASS
    greedy = plain_config.storage.governor.model_copy(update={"min_free_mb": 1e12})
    storage = plain_config.storage.model_copy(update={"governor": greedy})
    row = check_storage(plain_config.model_copy(update={"storage": storage}))
    assert row.status is Status.FAIL and "below min_free_mb" in row.detail


def test_schedule_row_says_when_listening_resumes(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("toad\n", encoding="utf-8")
    config = config_for(tmp_path, tmp_path / "b", labels, **{
        "schedule.mode": "daily", "schedule.timezone": "Europe/Berlin",
        "schedule.periods": [{"start": "05:00", "end": "09:00"}]})
    row = check_schedule(config, dt.datetime(2025, 5, 14, 12, tzinfo=dt.timezone.utc))
    assert row.detail == "daily: off now, until 2025-05-15 05:00 CEST"
