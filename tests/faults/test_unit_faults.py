"""Faults of the unit itself: a missing microphone at boot is the documented "no audio" exit (3), pipeline
restarts are counted in a window of time (transient failures over a season never end the process), and a clip
length the unit cannot hold (``storage.clips.max_s``) is refused at start with one line and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.daemon.contract import EXIT_NO_AUDIO, RecentFailures
from tests.faults.conftest import refused, run_cli


def test_a_missing_microphone_at_boot_exits_with_the_no_audio_code(example_bundle: Path,
                                                                  example_labels: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    result = run_cli("run", "--bundle", example_bundle, "--labels", example_labels[0], "--log-dir", tmp_path / "card",
                     "--threshold", "0.5", "--device", "no-such-microphone-here")
    assert result.exit_code == EXIT_NO_AUDIO, result.output
    assert "error:" in result.output and "Traceback" not in result.output


def test_failures_are_counted_within_a_window_of_time() -> None:
    hour = 3600.0
    spread = RecentFailures(hour)
    assert [spread.add(day * 86_400.0) for day in range(5)] == [1, 1, 1, 1, 1]  # one a day: never four at once
    burst = RecentFailures(hour)
    assert [burst.add(t) for t in (0.0, 10.0, 20.0, 30.0)] == [1, 2, 3, 4]
    assert burst.count(30.0 + hour) == 0  # and they age out


@pytest.mark.parametrize(("value", "why"), [("0", "greater than or equal to 10"),
                                            ("10000", "less than or equal to 600"), ("abc", "a valid number")])
def test_a_bad_clip_length_is_refused_at_start(example_bundle: Path, example_labels: tuple[Path, Path],
                                              tmp_path: Path, value: str, why: str) -> None:
    result = run_cli("run", "--profile", "raspberry-pi-4", "--bundle", example_bundle, "--labels", example_labels[0],
                     "--log-dir", tmp_path / "card", "--set", f"storage.clips.max_s={value}")
    refused(result, f"storage.clips.max_s: Input should be {why}", f"storage.clips.max_s={value}", "hint:")
    assert not (tmp_path / "card").exists(), "nothing written to the card"
    config = tmp_path / "unit.yaml"
    config.write_text(f"storage:\n  clips:\n    max_s: {value}\n", encoding="utf-8")
    refused(run_cli("run", "--config", config, "--bundle", example_bundle, "--labels", example_labels[0],
                    "--log-dir", tmp_path / "card"), f"storage.clips.max_s: Input should be {why}", "hint:")
