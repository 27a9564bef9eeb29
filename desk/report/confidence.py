"""``--confidence confidence.json`` (written by ``logs fit-confidence``): per-label logistic curves, thresholds.

Format (schema 1): ``{"schema": 1, "model_sha256", "labels_key", "labels": {NAME: {"fitted", "reason", "a", "b",
"n_yes", "n_no", "n_unsure", "thresholds": {"0.9": {"score", "ci": [lo, hi]}}}}}`` with
P(correct) = 1 / (1 + exp(-(a + b * score))).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from desk.report.season import ReportError

CONFIDENCE_SCHEMA = 1
HINT = "pass the confidence.json written by the fit-confidence step (schema 1)"


def load_confidence(path: Path) -> dict[str, dict[str, Any]]:
    """Per label: ``{"fitted", "reason", "a", "b", "n_yes", "n_no", "n_unsure", "thresholds": {p: {score, ci}}}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ReportError(f"no confidence file at {path}", HINT) from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path} is not readable JSON ({e})", HINT) from e
    if not isinstance(data, dict) or data.get("schema") != CONFIDENCE_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ReportError(f"{path}: confidence schema {found!r}, expected {CONFIDENCE_SCHEMA}", HINT)
    labels = data.get("labels")
    if not isinstance(labels, dict):
        raise ReportError(f"{path}: no 'labels' object", HINT)
    return {str(name): _label(path, str(name), entry) for name, entry in labels.items()}


def _label(path: Path, name: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ReportError(f"{path}: label {name!r} is not an object", HINT)
    fitted = bool(entry.get("fitted"))
    try:
        a, b = (float(entry["a"]), float(entry["b"])) if fitted else (math.nan, math.nan)
        thresholds = {str(p): {"score": float(t["score"]), "ci": [float(x) for x in t.get("ci") or []]}
                      for p, t in (entry.get("thresholds") or {}).items() if t is not None}
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: label {name!r} has a malformed curve or threshold ({e})", HINT) from e
    counts = {key: int(entry.get(key) or 0) for key in ("n_yes", "n_no", "n_unsure")}
    return {"fitted": fitted, "reason": entry.get("reason"), "a": None if not fitted else a,
            "b": None if not fitted else b, "thresholds": thresholds, **counts}
