"""``logs fit-confidence``: per-label logistic fit of reviewed verdicts on the score (Wood & Kahl 2024).

For every label, ``P(correct | score) = sigmoid(a + b·score)`` is fitted to the ``yes``/``no`` verdicts of
``review.csv`` (``unsure`` rows are counted, not fitted). The threshold for a target precision ``t`` is the
score where the fitted curve reaches ``t``: ``(logit(t) − a) / b``, with a percentile bootstrap interval.
Labels with too few verdicts, no positives or no negatives, or a curve that does not rise are reported
with the reason, never fitted.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import durable
from edge.errors import ConfigError
from edge.model.bundle import Bundle
from edge.model.space import check_space
from edge.scoring.confidence import CONFIDENCE_SCHEMA, confidence_path

VERDICTS = ("yes", "no", "unsure")
MIN_VERDICTS = 10
"""Fewest yes/no verdicts a label needs to be fitted."""
MIN_EACH_CLASS = 2
"""Fewest ``yes`` and fewest ``no`` verdicts a label needs (the slope is not identifiable otherwise)."""
DEFAULT_TARGETS = (0.9, 0.95)
BOOTSTRAP_REPLICATES = 1000
NEWTON_STEPS = 50
NEWTON_TOLERANCE = 1e-7
RIDGE = 1e-3
"""L2 penalty on the standardised slope: keeps perfectly separated verdicts at a finite, steep curve."""
CI_PERCENTILES = (2.5, 97.5)


@dataclass(frozen=True)
class Verdict:
    """One reviewed window: its label, score and verdict."""

    label: str
    score: float
    verdict: str


@dataclass(frozen=True)
class ReviewFile:
    """The verdicts of a ``review.csv`` and the label list / embedding space they were sampled from."""

    verdicts: tuple[Verdict, ...]
    labels_key: str
    model_sha256: str
    score_mode: str


def read_review(path: Path) -> ReviewFile:
    """Parse ``review.csv``; an unknown verdict raises :class:`ConfigError` naming the row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as e:
        raise ConfigError(f"cannot read review file {path}: {e.strerror}",
                          "pass the review.csv written by `logs review` (filled in review.html)") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"review file {path} is not UTF-8 CSV ({e})",
                          "save it as UTF-8 CSV (the review page downloads it so), or review again") from e
    needed = {"label", "score", "verdict", "labels_key", "model_sha256"}
    if not rows or not needed <= set(rows[0]):
        raise ConfigError(f"{path} is not a review file (needs columns {', '.join(sorted(needed))})",
                          "pass the review.csv written by `logs review`")
    verdicts = []
    for number, row in enumerate(rows, start=2):
        verdict = row["verdict"].strip().lower()
        if not verdict:
            continue
        if verdict not in VERDICTS:
            raise ConfigError(f"{path} line {number}: verdict '{row['verdict']}' is not one of {', '.join(VERDICTS)}",
                              "write yes, no or unsure (or leave it empty)")
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise ConfigError(f"{path} line {number}: score '{row['score']}' is not a finite number",
                              "pass the review.csv written by `logs review`; scores are never edited by hand")
        verdicts.append(Verdict(row["label"], score, verdict))
    keys = {row["labels_key"] for row in rows}
    if len(keys) != 1:
        raise ConfigError(f"{path} mixes {len(keys)} label lists", "fit-confidence each review file on its own")
    return ReviewFile(tuple(verdicts), keys.pop(), rows[0]["model_sha256"], rows[0].get("score_mode") or "logit")


def fit_logistic(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised penalised Newton fit of ``sigmoid(a + b·x)``.

    ``scores``/``correct``: ``(R, n)`` float (R independent fits, e.g. bootstrap replicates) -> ``a, b`` ``(R,)``.
    """
    mean = scores.mean(axis=1, keepdims=True)
    std = np.maximum(scores.std(axis=1, keepdims=True), 1e-9)
    z = (scores - mean) / std
    n = scores.shape[1]
    coef = np.zeros((scores.shape[0], 2))
    penalty = np.diag([0.0, RIDGE * n])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(coef[:, :1] + coef[:, 1:] * z)))
        w = p * (1 - p)
        grad = np.stack([(correct - p).sum(1), ((correct - p) * z).sum(1)], axis=1) - coef @ penalty
        h00, h01, h11 = w.sum(1), (w * z).sum(1), (w * z * z).sum(1) + penalty[1, 1]
        det = h00 * h11 - h01 * h01  # closed-form 2×2 solve: far cheaper than a batched linalg.solve
        step = np.stack([h11 * grad[:, 0] - h01 * grad[:, 1], h00 * grad[:, 1] - h01 * grad[:, 0]], 1) / det[:, None]
        coef += step
        if np.abs(step).max() < NEWTON_TOLERANCE:
            break
    b = coef[:, 1] / std[:, 0]
    return coef[:, 0] - b * mean[:, 0], b


def threshold_at(a: np.ndarray | float, b: np.ndarray | float, target: float) -> np.ndarray:
    """Score where ``sigmoid(a + b·score) = target``."""
    return np.asarray((math.log(target / (1 - target)) - np.asarray(a)) / np.asarray(b))


def _label_fit(label_verdicts: list[Verdict], targets: tuple[float, ...], rng: np.random.Generator,
               replicates: int) -> dict[str, Any]:
    counts = {v: sum(r.verdict == v for r in label_verdicts) for v in VERDICTS}
    entry: dict[str, Any] = {"fitted": False, "reason": None, "a": None, "b": None, "n_yes": counts["yes"],
                             "n_no": counts["no"], "n_unsure": counts["unsure"], "thresholds": {}}
    decided = [r for r in label_verdicts if r.verdict != "unsure"]
    if len(decided) < MIN_VERDICTS:
        entry["reason"] = f"only {len(decided)} yes/no verdicts (needs {MIN_VERDICTS})"
        return entry
    if counts["yes"] < MIN_EACH_CLASS or counts["no"] < MIN_EACH_CLASS:
        entry["reason"] = f"{counts['yes']} yes and {counts['no']} no (needs {MIN_EACH_CLASS} of each)"
        return entry
    x = np.array([r.score for r in decided])
    y = np.array([r.verdict == "yes" for r in decided], dtype=np.float64)
    a, b = (float(v[0]) for v in fit_logistic(x[None], y[None]))
    if b <= 0:
        entry.update(a=a, b=b, reason="P(correct) does not rise with the score")
        return entry
    picks = rng.integers(0, len(x), size=(replicates, len(x)))
    boot_y = y[picks]
    usable = (boot_y.min(1) < 1) & (boot_y.max(1) > 0)
    boot_a, boot_b = fit_logistic(x[picks][usable], boot_y[usable])
    rising = boot_b > 0
    if not (math.isfinite(a) and math.isfinite(b)):  # never install a curve that would write NaN thresholds
        entry.update(reason=f"the fit did not converge (a={a}, b={b})")
        return entry
    entry.update(fitted=True, a=a, b=b, score_range=[float(x.min()), float(x.max())])
    for target in targets:
        value = float(threshold_at(a, b, target))
        boot = threshold_at(boot_a[rising], boot_b[rising], target)
        low, high = (float(v) for v in np.percentile(boot, CI_PERCENTILES)) if boot.size else (value, value)
        entry["thresholds"][f"{target:g}"] = {"score": value, "ci": [low, high],
                                              "extrapolated": not x.min() <= value <= x.max()}
    return entry


def fit_confidence(review: ReviewFile, targets: Iterable[float] = DEFAULT_TARGETS, *,
              replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict[str, Any]:
    """The ``confidence.json`` content for a review file (see ``edge.scoring.confidence``)."""
    chosen = tuple(sorted(set(targets)))
    if not chosen or not all(0.5 <= t < 1 for t in chosen):
        raise ConfigError(f"target precisions {chosen} must lie in [0.5, 1)", "e.g. --target-precision 0.9,0.95")
    by_label: dict[str, list[Verdict]] = {}
    for verdict in review.verdicts:
        by_label.setdefault(verdict.label, []).append(verdict)
    rng = np.random.default_rng(seed)
    labels = {name: _label_fit(rows, chosen, rng, replicates) for name, rows in sorted(by_label.items())}
    return {"schema": CONFIDENCE_SCHEMA, "model_sha256": review.model_sha256, "labels_key": review.labels_key,
            "score_mode": review.score_mode, "target": f"{chosen[0]:g}", "targets": [f"{t:g}" for t in chosen],
            "labels": labels}


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write JSON durably through :mod:`edge.durable` (fsync'd temp file, rename, fsync of the folder)."""
    durable.make_dirs(path.parent)
    durable.atomic_write(path, json.dumps(content, indent=2, sort_keys=True).encode("utf-8"))


def require_fitted(confidence: dict[str, Any]) -> None:
    """Refuse a confidence in which no label could be fitted (nothing to write or install)."""
    labels = confidence["labels"]
    if not any(entry["fitted"] for entry in labels.values()):
        reasons = "; ".join(f"{name}: {entry['reason']}" for name, entry in labels.items()) or "no verdicts"
        raise ConfigError(f"no label could be fitted ({reasons})",
                          f"review more windows: each label needs {MIN_VERDICTS} yes/no verdicts, "
                          f"at least {MIN_EACH_CLASS} of each")


def check_fits(confidence: dict[str, Any], bundle: Bundle) -> None:
    """Refuse a confidence with a non-finite parameter or threshold, or a fitted label its list does not have."""
    stored = bundle.manifest.label_sets.get(str(confidence.get("labels_key")))
    for name, entry in confidence.get("labels", {}).items():
        if not entry.get("fitted"):
            continue
        numbers = [entry.get("a"), entry.get("b"), *(t.get("score") for t in entry.get("thresholds", {}).values())]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise ConfigError(f"the confidence of '{name}' has a parameter or threshold that is not a finite number",
                              "fit confidence again from the review (`logs fit-confidence`)")
        if stored is not None and name not in stored.names:
            raise ConfigError(f"the confidence names '{name}', which label list {stored.key} ({stored.path}) "
                              "does not have", "fit confidence on the review of this list")


def install_confidence(bundle_dir: Path, confidence: dict[str, Any], target: str | None = None) -> Path:
    """Put a confidence into the bundle (checksummed), refusing one from another embedding space."""
    from edge.model.bundle import open_bundle, write_manifest

    bundle = open_bundle(bundle_dir)
    check_fits(confidence, bundle)
    check_space(f"confidence fit of {confidence['labels_key']}", str(confidence.get("model_sha256") or ""), bundle,
                "review again with this bundle (`logs review --bundle ...`), then fit confidence again")
    if target is not None:
        if target not in confidence.get("targets", []):
            raise ConfigError(f"target precision {target} was not fitted (have: {confidence.get('targets')})",
                              "re-run fit-confidence with it in --target-precision")
        confidence = {**confidence, "target": target}
    rel = confidence_path(confidence["labels_key"])
    write_json_atomic(bundle_dir / rel, confidence)
    write_manifest(bundle_dir, dataclasses.replace(bundle.manifest, files={**bundle.manifest.files, rel: ""}))
    return bundle_dir / rel
