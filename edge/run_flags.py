"""``run`` flags -> dotted config overrides (flags that were not given override nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.errors import ConfigError


def parse_confirm(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3)."""
    try:
        n, m = (int(part) for part in text.split("/"))
    except ValueError as e:
        raise ConfigError(f"--confirm {text!r} is not N/M", "write e.g. 2/3 (2 hits in the last 3 windows)") from e
    return n, m


def run_overrides(*, labels: Path | None, bundle: Path | None, log_dir: Path | None, threshold: float | None,
                  confirm: str | None, window: float | None, hop: float | None, device: str | None,
                  rate: int | None, channel: int | None, precision: str | None, score_mode: str | None,
                  heartbeat: float | None) -> dict[str, Any]:
    """Dotted config keys for every flag that was given."""
    values: dict[str, Any] = {
        "analysis.labels": labels, "model.bundle": bundle, "storage.log_dir": log_dir,
        "analysis.threshold": threshold, "analysis.window_s": window, "analysis.hop_s": hop,
        "audio.device": device, "audio.sample_rate": rate, "audio.channel": channel,
        "model.precision": [precision] if precision else None, "analysis.score_mode": score_mode,
        "health.heartbeat_s": heartbeat,
    }
    if confirm is not None:
        values["analysis.confirm_n"], values["analysis.confirm_m"] = parse_confirm(confirm)
    return {key: value for key, value in values.items() if value is not None}
