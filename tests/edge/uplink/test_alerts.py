"""Alert rules (score or calibrated probability, cooldown, quiet hours) and their place in the config schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edge.config.loader import resolve_config
from edge.config.uplink import AlertRule, UplinkSection
from edge.errors import ConfigError
from edge.stream.detector import DetectionEvent
from edge.uplink.alerts import AlertRules

T = dt.datetime(2024, 5, 1, 21, 0, tzinfo=dt.timezone.utc)


def hit(label: str, score: float) -> DetectionEvent:
    return DetectionEvent(0, 480_000, label, score, score / 10, 0, 1)


def rule(**fields: object) -> AlertRule:
    return AlertRule.model_validate({"label": "toad", **fields})


def test_score_threshold_and_cooldown() -> None:
    rules = AlertRules([rule(min_score=10.0, cooldown_s=600)])
    assert rules.check(hit("toad", 9.9), T) is None
    first = rules.check(hit("Toad", 12.0), T)
    assert first is not None and first["label"] == "Toad" and first["score"] == 12.0
    assert rules.check(hit("toad", 15.0), T + dt.timedelta(seconds=599)) is None  # cooling down
    assert rules.check(hit("toad", 15.0), T + dt.timedelta(seconds=601)) is not None
    assert rules.check(hit("wood frog", 99.0), T) is None  # no rule, no alert


def test_calibrated_probability_needs_a_fit() -> None:
    rules = AlertRules([rule(min_p=0.9)], confidence={"toad": lambda s: 1.0 if s > 5 else 0.5})
    assert rules.check(hit("toad", 4.0), T) is None
    assert rules.check(hit("toad", 6.0), T)["p_correct"] == 1.0  # type: ignore[index]
    with pytest.raises(ConfigError, match="no confidence fit"):
        AlertRules([rule(min_p=0.9)])


def test_quiet_hours_are_local_and_wrap_midnight() -> None:
    rules = AlertRules([rule(min_score=1.0, cooldown_s=0, quiet_hours=["22:00-06:00"])], "Europe/Berlin")
    assert rules.check(hit("toad", 5.0), T) is None  # 23:00 in Berlin (UTC+2)
    assert rules.check(hit("toad", 5.0), T - dt.timedelta(hours=2)) is not None  # 21:00 local


def test_schema_refuses_bad_rules_with_the_key(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("toad\nwood frog\n")
    base = {"model.bundle": str(tmp_path / "bundle"), "analysis.labels": str(labels),
            "storage.log_dir": str(tmp_path)}
    config = resolve_config(None, None, {**base, "uplink.url": "mqtts://broker:8883",
                                         "uplink.alerts": [{"label": "Toad", "min_score": 3.0}]}, cwd=tmp_path)
    assert config.uplink.port == 8883 and config.uplink.tls and config.uplink.enabled
    with pytest.raises(ConfigError, match=r"uplink.alerts\[0\].label: 'bullfrog' is not in labels.txt"):
        resolve_config(None, None, {**base, "uplink.url": "mqtt://b",
                                    "uplink.alerts": [{"label": "bullfrog", "min_score": 3.0}]}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="credentials do not belong in the URL"):
        resolve_config(None, None, {**base, "uplink.url": "mqtt://u:pw@b"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="exactly one of min_score or min_p"):
        resolve_config(None, None, {**base, "uplink.alerts": [{"label": "toad"}]}, cwd=tmp_path)
    assert not resolve_config(None, None, base, cwd=tmp_path).uplink.enabled  # off by default


def test_url_forms() -> None:
    assert UplinkSection(url="mqtt://10.0.0.5").port == 1883
    assert UplinkSection(url="mqtts://h.example.org:9999").port == 9999
    with pytest.raises(ValueError, match="is not mqtt"):
        UplinkSection(url="http://h")
