"""``plan``: the deployment budget's arithmetic worked out by hand, and its record sizes against a card the runtime
wrote (so no size is restated here)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config.loader import resolve_config
from edge.ops.plan import (
    CLIP_BYTES_PER_SAMPLE,
    DETECTION_RECORD_BYTES,
    EFFORT_RECORD_BYTES,
    HEARTBEAT_RECORD_BYTES,
    DeploymentPlan,
    PlanInputs,
    make_plan,
)

REPO = Path(__file__).resolve().parents[3]
LABELS = REPO / "firmware_configs" / "labels" / "north-america-example.txt"
DAY = dt.date(2025, 5, 14)
BASE = {
    "model.bundle": "bundle", "analysis.labels": str(LABELS), "analysis.window_s": 10, "analysis.hop_s": 5,
    "health.heartbeat_s": 60, "storage.clips.mode": "detections", "storage.clips.pre_s": 2,
    "storage.clips.post_s": 3, "storage.clips.format": "flac", "storage.clips.max_per_hour": 0,
    "storage.governor.min_free_mb": 1000, "storage.governor.clips_min_free_percent": 10,
    "power.off_w": 1.0, "power.listen_w": 2.0, "power.infer_w": 6.0, "storage.embeddings": "off",
}


def plan_for(overrides: dict[str, object], ms: float | None = 500.0, per_hour: float = 12.0) -> DeploymentPlan:
    config = resolve_config(None, None, {**BASE, **overrides})
    return make_plan(config, PlanInputs(DAY, ms_per_window=ms, detections_per_hour=per_hour, card_gb=32, os_gb=8))


def test_always_on_budget_matches_hand_arithmetic() -> None:
    plan = plan_for({})
    assert plan.on_hours == 24
    assert plan.windows_per_day == 86_400 // 5
    assert plan.busy_while_on == pytest.approx(500 / 5_000)
    assert plan.busy_per_day == pytest.approx(17_280 * 0.5 / 86_400)
    assert plan.wh_per_day == pytest.approx(24 * (2.0 + 0.1 * (6.0 - 2.0)))  # 57.6 Wh
    assert plan.detections_per_day == 12 * 24
    # 288 detections + (1440 minutes + 288 detection batches) effort rows + 1440 heartbeats
    log_mb = (288 * DETECTION_RECORD_BYTES + (1_440 + 288) * EFFORT_RECORD_BYTES + 1_440 * HEARTBEAT_RECORD_BYTES) / 1e6
    assert plan.log_mb_per_day == pytest.approx(log_mb)
    # (10 + 2 + 3) s x 48 kHz x bytes per sample x 0.6 (FLAC) per clip
    clip_mb = 15 * 48_000 * CLIP_BYTES_PER_SAMPLE * 0.6 / 1e6
    assert plan.clips_mb_per_day == pytest.approx(288 * clip_mb)
    # 24 000 MB free after the OS; clips stop at 10 % of 32 000 MB free, logs go on until 1000 MB are left.
    per_day = log_mb + 288 * clip_mb
    assert plan.days_until_clips_stop == pytest.approx((24_000 - 3_200) / per_day)
    assert plan.days_until_full == pytest.approx((24_000 - 3_200) / per_day + (3_200 - 1_000) / log_mb)


def test_daily_periods_without_clips() -> None:
    plan = plan_for({"analysis.hop_s": 10, "schedule.mode": "daily", "schedule.timezone": "Europe/Berlin",
                     "schedule.periods": [{"start": "06:00", "end": "08:00"}, {"start": "20:00", "end": "22:00"}],
                     "storage.clips.mode": "off"}, ms=2_000, per_hour=10)
    assert plan.on_hours == 4
    assert plan.windows_per_day == 4 * 3_600 // 10
    assert plan.busy_while_on == pytest.approx(0.2)
    assert plan.wh_per_day == pytest.approx(20 * 1.0 + 4 * (2.0 + 0.2 * 4.0))  # 31.2 Wh
    assert plan.clips_mb_per_day == 0 and math.isinf(plan.days_until_clips_stop)
    log_mb = (40 * DETECTION_RECORD_BYTES + (240 + 40) * EFFORT_RECORD_BYTES + 1_440 * HEARTBEAT_RECORD_BYTES) / 1e6
    assert plan.days_until_full == pytest.approx((24_000 - 1_000) / log_mb)


def test_clip_cap_and_hourly_limit() -> None:
    plan = plan_for({"storage.clips.max_per_hour": 5, "storage.governor.max_clips_mb": 100})
    assert plan.clips_per_day == 5 * 24
    clips_mb = 120 * 0.864
    assert plan.days_until_clips_stop == pytest.approx(100 / clips_mb)
    log_mb = (288 * 200 + (1_440 + 288) * 140 + 1_440 * 700) / 1e6
    after_cap = 24_000 - (100 / clips_mb) * (log_mb + clips_mb)
    assert plan.days_until_full == pytest.approx(100 / clips_mb + (after_cap - 1_000) / log_mb)


def test_slower_than_real_time_is_visible_and_energy_saturates() -> None:
    plan = plan_for({}, ms=7_500)
    assert plan.busy_while_on == pytest.approx(1.5)
    assert plan.wh_per_day == pytest.approx(24 * 6.0)


def test_without_a_measurement_duty_and_energy_are_unknown() -> None:
    plan = plan_for({}, ms=None)
    assert plan.busy_while_on is None and plan.wh_per_day is None
    assert plan.windows_per_day == 17_280


def test_plan_command_prints_the_budget() -> None:
    args = ["plan", "--profile", "generic-x86", "--ms-per-window", "500", "--date", "2025-05-14",
            "--set", "analysis.hop_s=5", "--set", "power.listen_w=2", "--set", "power.infer_w=6",
            "--set", "power.off_w=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "17280 /day" in result.stdout
    assert "57.6 Wh/day" in result.stdout
    bad = CliRunner().invoke(app, ["plan", "--profile", "generic-x86", "--date", "14/05/2025"])
    assert bad.exit_code != 0 and "is not YYYY-MM-DD" in bad.output


def test_plan_record_and_clip_sizes_match_a_card_the_runtime_wrote(example_bundle: Path,
                                                                  example_labels: tuple[Path, Path],
                                                                  toad_in_night: Path, tmp_path: Path) -> None:
    """The plan's per-record sizes and clip sizes, derived from what a real run put on the card."""
    from desk.collect.cards import read_card
    from edge.card.guano import read_guano
    from edge.ops.setup import InputOptions, build_daemon

    config = resolve_config(None, None, {
        "model.bundle": str(example_bundle), "analysis.labels": str(example_labels[0]), "unit.unit_id": "AM-0042",
        "unit.deployment_id": "marsh-2025", "storage.log_dir": str(tmp_path), "analysis.threshold": 0.5,
        "analysis.score_mode": "softmax", "analysis.window_s": 2, "analysis.hop_s": 1, "health.heartbeat_s": 0.05,
        "storage.clips.mode": "detections", "storage.clips.format": "wav", "storage.clips.max_per_hour": 0,
        "storage.governor.min_free_mb": 0, "storage.governor.clips_min_free_percent": 0,
        "storage.embeddings": "int8"})
    assert build_daemon(config, InputOptions(toad_in_night, fast=True)).run() == 0

    def bytes_per_row(folder: str) -> float:
        files = list((tmp_path / folder).iterdir())
        lines = sum(len(f.read_bytes().splitlines()) for f in files)
        header = len(files) if folder in ("detections", "effort") else 0
        return sum(f.stat().st_size for f in files) / (lines - header)

    for folder, planned in (("detections", DETECTION_RECORD_BYTES), ("effort", EFFORT_RECORD_BYTES),
                            ("health", HEARTBEAT_RECORD_BYTES)):
        assert 0.7 < planned / bytes_per_row(folder) < 1.4, (folder, planned, bytes_per_row(folder))
    # window embeddings: a record on the card is what the plan's record formula says for the card's dimension
    # (the tiny model's here), and the plan counts one such record (at BioLingual's 512) per window
    from edge.card.embedformat import read_embedding_segment, record_bytes
    from edge.ops.plan import EMBEDDING_DIM

    segments = [read_embedding_segment(path) for path in (tmp_path / "embeddings").glob("*.emb")]
    records = sum(len(segment.records) for segment in segments)
    assert records > 0, "the run wrote window embeddings"
    on_card = sum(segment.records.nbytes for segment in segments) / records
    planned = make_plan(config, PlanInputs(DAY, ms_per_window=500.0, detections_per_hour=0, card_gb=32, os_gb=8))
    assert on_card == record_bytes(segments[0].header.dim, "int8")  # type: ignore[union-attr]
    assert planned.embeddings_mb_per_day * 1e6 / planned.windows_per_day == pytest.approx(
        record_bytes(EMBEDDING_DIM, "int8"))
    card = read_card(tmp_path)
    detections, effort_rows = len(card.detections.rows), len(card.effort.rows)
    minutes = len({row[card.effort.columns.index("minute_utc")] for row in card.effort.rows})
    assert minutes <= effort_rows <= minutes + detections, "effort rows: one per minute plus one per detection batch"
    for clip in (tmp_path / "clips").rglob("*.wav"):
        guano = read_guano(clip)
        seconds = float(guano["Length"])
        assert clip.stat().st_size == pytest.approx(seconds * 48_000 * CLIP_BYTES_PER_SAMPLE, rel=0.02)
