"""Per-label calibration installed in the bundle: P(correct | score) and the score threshold for a target precision.

Made at the desk by ``logs calibrate`` from reviewed windows (a logistic fit per label after Wood & Kahl 2024)
and installed with ``--install BUNDLE`` as ``calibrations/<labels key>.json``, checksummed in the manifest and
tied to the label list (by its key) and to the embedding space (the fp32 audio encoder's sha256). ``analyze``,
``run`` and ``rescore`` then use each fitted label's threshold and write ``p_correct`` next to its score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import BundleError
from edge.model.bundle import Bundle

CALIBRATION_SCHEMA = 1
CALIBRATION_DIR = "calibrations"
SPACE_MODEL = "fp32"
"""The model whose sha256 names the embedding space that scores (and so calibrations) belong to."""


def calibration_path(labels_key: str) -> str:
    """Bundle-relative path of the calibration of the label list with this key."""
    return f"{CALIBRATION_DIR}/{labels_key}.json"


def space_sha256(bundle: Bundle) -> str:
    """sha256 of the bundle's fp32 audio encoder: the identity of its embedding space."""
    entry = bundle.model(SPACE_MODEL)
    return bundle.manifest.files.get(entry.path, "")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))))


@dataclass(frozen=True)
class LabelCalibration:
    """Logistic fit ``P(correct) = sigmoid(a + b·score)`` of one label and its thresholds."""

    a: float
    b: float
    thresholds: dict[str, float]
    """Target precision (as written, e.g. ``"0.9"``) -> score threshold."""

    def p_correct(self, score: np.ndarray | float) -> np.ndarray:
        return sigmoid(self.a + self.b * np.asarray(score, dtype=np.float64))


@dataclass(frozen=True)
class Calibration:
    """The fitted labels of one label list; unfitted labels are absent (they keep the run's own threshold)."""

    labels_key: str
    model_sha256: str
    score_mode: str
    target: str
    """Target precision whose thresholds the runtime applies."""
    labels: dict[str, LabelCalibration]

    def thresholds(self) -> dict[str, float]:
        """Per fitted label, its score threshold at :attr:`target`."""
        return {name: cal.thresholds[self.target] for name, cal in self.labels.items() if self.target in cal.thresholds}

    def p_correct(self, names: tuple[str, ...], scores: np.ndarray) -> np.ndarray:
        """``(B, L)`` scores in label order ``names`` -> ``(B, L)`` P(correct), NaN for unfitted labels."""
        out = np.full(scores.shape, np.nan, dtype=np.float64)
        for col, name in enumerate(names):
            cal = self.labels.get(name)
            if cal is not None:
                out[:, col] = cal.p_correct(scores[:, col])
        return out


def parse_calibration(raw: dict[str, Any], target: str | None = None) -> Calibration:
    """Calibration from ``calibration.json`` content; ``target`` defaults to the file's installed target."""
    if raw.get("schema") != CALIBRATION_SCHEMA:
        raise BundleError(f"calibration schema {raw.get('schema')!r} is not {CALIBRATION_SCHEMA}",
                          "re-run `biolingual-edge logs calibrate`")
    labels = {
        name: LabelCalibration(float(entry["a"]), float(entry["b"]),
                               {t: float(v["score"]) for t, v in entry.get("thresholds", {}).items()})
        for name, entry in raw["labels"].items() if entry.get("fitted")
    }
    chosen = target or raw.get("target") or min((t for c in labels.values() for t in c.thresholds), default="")
    return Calibration(raw["labels_key"], raw.get("model_sha256", ""), raw.get("score_mode", "logit"), chosen, labels)


def load_calibration(bundle: Bundle, labels_key: str) -> Calibration | None:
    """The installed calibration of a label list, or None; one from another embedding space is refused."""
    rel = calibration_path(labels_key)
    if rel not in bundle.manifest.files:
        return None
    try:
        raw = json.loads((bundle.root / rel).read_text(encoding="utf-8"))
        calibration = parse_calibration(raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"calibration {bundle.root / rel} is unreadable ({e})",
                          "re-install it with `biolingual-edge logs calibrate --install`") from e
    if calibration.model_sha256 and calibration.model_sha256 != space_sha256(bundle):
        raise BundleError(f"calibration {rel} was fitted on another model's scores",
                          "review and calibrate again with this bundle")
    return calibration


def load_calibrations(bundle: Bundle, labels_keys: list[str]) -> Calibration | None:
    """The installed calibrations of several label sets (a list and its heads) as one, or None if none."""
    found = [c for key in labels_keys if (c := load_calibration(bundle, key)) is not None]
    if not found:
        return None
    merged: dict[str, LabelCalibration] = {}
    thresholds: dict[str, LabelCalibration] = {}
    for calibration in found:
        for name, cal in calibration.labels.items():
            merged[name] = cal
            if calibration.target in cal.thresholds:
                thresholds[name] = LabelCalibration(cal.a, cal.b, {"run": cal.thresholds[calibration.target]})
    modes = {c.score_mode for c in found}
    return Calibration("+".join(c.labels_key for c in found), found[0].model_sha256, "/".join(sorted(modes)), "run",
                       {name: thresholds.get(name, LabelCalibration(cal.a, cal.b, {})) for name, cal in merged.items()})
