"""Per-label confidence installed in the bundle: P(correct | score) and the score threshold for a target precision.

Made at the desk by ``logs fit-confidence`` from reviewed windows (a logistic fit per label after Wood & Kahl 2024)
and installed with ``--install BUNDLE`` as ``calibrations/<labels key>.json``, checksummed in the manifest and
tied to the label list (by its key) and to the embedding space (:mod:`edge.model.space`). ``analyze``,
``run`` and ``rescore`` then use each fitted label's threshold and write ``p_correct`` next to its score.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import BundleError
from edge.model.bundle import Bundle
from edge.model.space import check_space

CONFIDENCE_SCHEMA = 1
CONFIDENCE_DIR = "calibrations"
"""Bundle folder of the installed fits (its name predates the word: bundles already in the field keep theirs)."""


def confidence_path(labels_key: str) -> str:
    """Bundle-relative path of the confidence of the label list with this key."""
    return f"{CONFIDENCE_DIR}/{labels_key}.json"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))))


@dataclass(frozen=True)
class LabelConfidence:
    """Logistic fit ``P(correct) = sigmoid(a + b·score)`` of one label and its thresholds."""

    a: float
    b: float
    thresholds: dict[str, float]
    """Target precision (as written, e.g. ``"0.9"``) -> score threshold."""

    def p_correct(self, score: np.ndarray | float) -> np.ndarray:
        return sigmoid(self.a + self.b * np.asarray(score, dtype=np.float64))


@dataclass(frozen=True)
class Confidence:
    """The fitted labels of one label list; unfitted labels are absent (they keep the run's own threshold)."""

    labels_key: str
    model_sha256: str
    score_mode: str
    target: str
    """Target precision whose thresholds the runtime applies."""
    labels: dict[str, LabelConfidence]

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


def parse_confidence(raw: dict[str, Any], target: str | None = None) -> Confidence:
    """Confidence from ``confidence.json`` content; ``target`` defaults to the file's installed target."""
    if raw.get("schema") != CONFIDENCE_SCHEMA:
        raise BundleError(f"confidence schema {raw.get('schema')!r} is not {CONFIDENCE_SCHEMA}",
                          "re-run `biolingual-edge logs fit-confidence`")
    labels = {
        name: LabelConfidence(float(entry["a"]), float(entry["b"]),
                               {t: float(v["score"]) for t, v in entry.get("thresholds", {}).items()})
        for name, entry in raw["labels"].items() if entry.get("fitted")
    }
    chosen = target or raw.get("target") or min((t for c in labels.values() for t in c.thresholds), default="")
    return Confidence(raw["labels_key"], raw.get("model_sha256", ""), raw.get("score_mode", "logit"), chosen, labels)


def load_confidence(bundle: Bundle, labels_key: str) -> Confidence | None:
    """The installed confidence of a label list, or None; one from another embedding space is refused."""
    rel = confidence_path(labels_key)
    if rel not in bundle.manifest.files:
        return None
    try:
        raw = json.loads(bundle.path(rel).read_text(encoding="utf-8"))
        confidence = parse_confidence(raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"confidence {bundle.root / rel} is unreadable ({e})",
                          "re-install it with `biolingual-edge logs fit-confidence --install`") from e
    check_space(f"confidence {rel}", confidence.model_sha256, bundle,
                "review and fit confidence again with this bundle (`logs review`, then `logs fit-confidence`)")
    return confidence


def load_confidences(bundle: Bundle, labels_keys: list[str], replaced: Collection[str] = ()) -> Confidence | None:
    """The installed confidence fits of several label sets (a list and its heads) as one, or None if none.

    ``replaced``: labels of the first set (the list) whose scores a head replaces; the list's fits of them are
    fits of zero-shot scores, so they are dropped (the head's own fit, if installed, applies).
    """
    found = [(i, c) for i, key in enumerate(labels_keys) if (c := load_confidence(bundle, key)) is not None]
    if not found:
        return None
    merged: dict[str, LabelConfidence] = {}
    thresholds: dict[str, LabelConfidence] = {}
    dropped = {name.casefold() for name in replaced}
    for index, confidence in found:
        for name, cal in confidence.labels.items():
            if index == 0 and name.casefold() in dropped:
                continue
            merged[name] = cal
            if confidence.target in cal.thresholds:
                thresholds[name] = LabelConfidence(cal.a, cal.b, {"run": cal.thresholds[confidence.target]})
    if not merged:
        return None
    modes = {c.score_mode for _, c in found}
    fits = {name: thresholds.get(name, LabelConfidence(cal.a, cal.b, {})) for name, cal in merged.items()}
    return Confidence("+".join(c.labels_key for _, c in found), found[0][1].model_sha256, "/".join(sorted(modes)),
                      "run", fits)
