"""The SD-card log writer: record contents, time stamps, rotation, effort, clips with GUANO, storage governor."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.card.cardformat import CardLogError, unique_name
from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.governor import StoragePolicy
from edge.card.guano import read_guano
from edge.card.segments import read_csv_segment, read_jsonl_segment
from tests.cardlog_support import HOP, LABELS, RATE, T0, WINDOW, event_at, fill_up, small_filesystem, write_card


def rows(root: Path, kind: str) -> list[dict[str, str]]:
    out = []
    for path in sorted((root / kind).glob("*.csv*")):
        segment = read_csv_segment(path)
        assert not segment.problems and not segment.notes, (segment.problems, segment.notes)
        out += [dict(zip(segment.header, row)) for row in segment.rows]
    return out


def records(root: Path, kind: str) -> list[dict[str, object]]:
    out = []
    for path in sorted((root / kind).glob("*.jsonl*")):
        segment = read_jsonl_segment(path)
        assert not segment.problems and not segment.notes
        out += segment.records
    return out


def test_detection_rows_carry_identity_clock_state_and_exact_utc(tmp_path: Path) -> None:
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {"config_hash": "x"})
    anchor = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
    log.open_stream(anchor, 1_000, "gps")
    log.detections([event_at(1_000 + 3 * RATE + 24, "toad, great plains")])
    log.close()
    (row,) = rows(tmp_path, "detections")
    assert row["utc"] == "2024-05-01T12:00:03.250+00:00"  # 24 samples = 0.5 ms, floored to milliseconds
    assert row["end_utc"] == "2024-05-01T12:00:13.250+00:00"
    assert (row["unit_id"], row["deployment_id"], row["clock_sync"], row["boot_id"]) == (
        "AM-01", "marsh", "gps", log.boot_id)
    assert row["label"] == "toad, great plains"  # a comma survives CSV quoting
    assert int(row["start_sample"]) == 1_000 + 3 * RATE + 24


def test_manifest_holds_the_callers_boot_info_and_a_settings_hash(tmp_path: Path) -> None:
    info = {"config_hash": "abc", "bundle_sha256": {"audio.onnx": "00ff"}, "window_s": 10, "hop_s": 5}
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, info)
    manifest = json.loads((tmp_path / "boots" / f"{log.boot_id}.json").read_text())
    assert manifest["boot_info"] == info
    assert manifest["schema_version"] >= 1 and manifest["sample_rate"] == RATE
    other = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {**info, "hop_s": 2.5})
    assert other.settings_hash != log.settings_hash


def test_segments_rotate_per_utc_day_by_atomic_rename(tmp_path: Path) -> None:
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {})
    log.open_stream(datetime(2024, 5, 1, 23, 59, 50, tzinfo=timezone.utc), 0, "ntp")
    log.detections([event_at(0, "toad")])
    log.flush()
    assert [p.name.endswith(".csv.part") for p in (tmp_path / "detections").iterdir()] == [True]
    log.detections([event_at(20 * RATE, "toad")])  # 00:00:10 the next day
    log.flush()
    names = sorted(p.name for p in (tmp_path / "detections").iterdir())
    assert names[0].startswith("2024-05-01") and names[0].endswith(".csv")  # sealed by the rotation
    assert names[1].startswith("2024-05-02") and names[1].endswith(".csv.part")
    log.close()
    assert not list(tmp_path.rglob("*.part"))


def test_effort_counts_analysed_seconds_per_minute_once_despite_window_overlap(tmp_path: Path) -> None:
    write_card(tmp_path, minutes=3)
    effort = rows(tmp_path, "effort")
    per_minute: dict[str, float] = {}
    for e in effort:  # a minute is split into several rows when detections were written before it ended
        per_minute[e["minute_utc"]] = per_minute.get(e["minute_utc"], 0.0) + float(e["analysed_s"])
    assert per_minute == {(T0 + timedelta(minutes=m)).isoformat(timespec="milliseconds"): 60.0 for m in range(3)}
    spans = [(int(e["first_sample"]), int(e["last_sample"])) for e in effort]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "rows tile the analysed time, no overlap"


def test_effort_splits_a_span_across_a_minute_boundary_by_utc_not_by_sample_zero(tmp_path: Path) -> None:
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {})
    log.open_stream(datetime(2024, 5, 1, 3, 0, 55, tzinfo=timezone.utc), 0, "ntp")
    log.effort(0, WINDOW)  # 03:00:55 .. 03:01:05
    log.close()
    assert [(e["minute_utc"][11:16], float(e["analysed_s"])) for e in rows(tmp_path, "effort")] == [
        ("03:00", 5.0), ("03:01", 5.0)]


def test_events_and_health_are_json_lines_with_the_envelope(tmp_path: Path) -> None:
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {})
    log.open_stream(T0, 0, "rtc")
    log.event("xrun", sample=RATE, count=3, utc="caller's own utc")
    log.health({"temperature_c": 51.5})
    log.open_stream(T0 + timedelta(seconds=30), 2 * RATE, "ntp")
    log.close()
    events = records(tmp_path, "events")
    xrun = next(e for e in events if e["kind"] == "xrun")
    assert xrun["utc"] == "2024-05-01T21:00:01.000+00:00" and xrun["count"] == 3
    assert xrun["field_utc"] == "caller's own utc" and xrun["clock_sync"] == "rtc"
    change = next(e for e in events if e["kind"] == "clock_change")
    assert change["previous_clock_sync"] == "rtc" and change["stream"] == 2
    (health,) = records(tmp_path, "health")
    assert health["temperature_c"] == 51.5 and health["disk_free_bytes"] > 0
    assert len({e["seq"] for e in events + [health]}) == len(events) + 1


def test_misuse_is_a_clear_error(tmp_path: Path) -> None:
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {})
    with pytest.raises(CardLogError, match="before open_stream"):
        log.detections([event_at(0, "toad")])
    with pytest.raises(CardLogError, match="clock_sync"):
        log.open_stream(T0, 0, "sundial")
    with pytest.raises(CardLogError, match="naive"):
        log.open_stream(datetime(2024, 5, 1), 0, "ntp")
    with pytest.raises(CardLogError, match="unit_id"):
        UnitIdentity("", "marsh")


def test_clip_is_a_wav_with_guano_metadata_written_atomically(tmp_path: Path) -> None:
    log = CardLog(tmp_path, UnitIdentity("AM-01", "marsh"), RATE, {"config_hash": "x"})
    log.open_stream(T0, 0, "ntp")
    audio = (0.5 * np.sin(np.arange(3 * RATE) / 10)).astype(np.float32)
    event = event_at(RATE, "wood frog")
    path = log.save_clip(event, audio, 0)
    assert path is not None and path.parent.name == unique_name("wood frog")
    samples, rate = sf.read(path, dtype="float32")
    assert rate == RATE and np.abs(samples - audio).max() < 1e-4
    guano = read_guano(path)
    assert guano["GUANO|Version"] == "1.0" and guano["Species Auto ID"] == "wood frog"
    assert guano["Timestamp"] == "2024-05-01T21:00:00.000+00:00" and guano["Serial"] == "AM-01"
    assert guano["BIOL|Settings Hash"] == log.settings_hash and guano["BIOL|Event Start Sample"] == str(RATE)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_governor_stops_clips_then_thins_oldest_keeping_k_per_label(tmp_path: Path) -> None:
    mib = 1024 * 1024
    with small_filesystem(tmp_path / "card", "4m") as card:
        policy = StoragePolicy(stop_clips_below_bytes=int(1.5 * mib), thin_clips_below_bytes=mib,
                               keep_clips_per_label=2, clip_format="wav")  # WAV: zeros do not compress
        log = CardLog(card, UnitIdentity("AM-01", "marsh"), RATE, {}, policy)
        log.open_stream(T0, 0, "ntp")
        audio = np.zeros(RATE, np.float32)  # ~94 KiB per clip
        saved = []
        for i in range(40):
            path = log.save_clip(event_at(i * HOP, LABELS[i % 2]), audio, i * HOP)
            if path is None:
                break
            saved.append(path)
        assert 10 < len(saved) < 40, "clips stop once free space falls under the stop threshold"
        filler = fill_up(card)
        filler.write_bytes(b"\0" * (filler.stat().st_size - 2 * mib // 3))  # leave free < thin threshold
        log.health({})  # heartbeat runs the governor
        left = {label: sorted(p for p in saved if p.exists() and p.parent.name == unique_name(label))
                for label in LABELS[:2]}
        for label, kept in left.items():
            assert len(kept) >= 2, label
            newest = sorted((p for p in saved if p.parent.name == unique_name(label)), key=lambda p: p.name)
            assert kept == newest[-len(kept):], "thinning removes the oldest first"
        filler.unlink()
        assert log.save_clip(event_at(99 * HOP, "toad"), audio, 99 * HOP) is not None
        log.close()
        kinds = [e["kind"] for e in records(card, "events")]
        assert kinds.index("clips_paused") < kinds.index("clips_thinned") < kinds.index("clips_resumed")
