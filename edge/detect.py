"""Turning per-window label scores into detections."""

from __future__ import annotations

from dataclasses import dataclass

from edge.scoring import Scores, top_k


@dataclass(frozen=True)
class Detection:
    """A label scored on one window; times are sample indices at the model rate from stream start."""

    start_sample: int
    end_sample: int
    label: str
    score: float
    """Score in the scorer's mode (logit = cosine × logit scale, or softmax probability)."""
    cosine: float
    """Raw cosine similarity between the window's and the label's embedding."""
    rank: int
    """1 for the window's best label."""


@dataclass(frozen=True)
class WindowSelector:
    """Per window, the ``k`` best labels whose score reaches ``threshold`` (no threshold: the ``k`` best)."""

    names: tuple[str, ...]
    k: int = 1
    threshold: float | None = None

    def __call__(self, starts: list[int], ends: list[int], scores: Scores) -> list[Detection]:
        best = top_k(scores.score, self.k)
        detections = []
        for row, (start, end) in enumerate(zip(starts, ends)):
            for rank, col in enumerate(best[row], start=1):
                value = float(scores.score[row, col])
                if self.threshold is not None and value < self.threshold:
                    break
                detections.append(
                    Detection(start, end, self.names[col], value, float(scores.cosine[row, col]), rank)
                )
        return detections



@dataclass(frozen=True)
class DetectionEvent:
    """One confirmed detection: overlapping hits of a label merged; times are model-rate sample indices."""

    start_sample: int
    """Start of the first window that contributed."""
    end_sample: int
    """End of the last window that contributed."""
    label: str
    peak_score: float
    """Highest score among the merged windows (scorer's mode)."""
    peak_cosine: float
    """Raw cosine of the window with the peak score."""
    peak_start_sample: int
    """Start of the window with the peak score."""
    windows: int
    """How many windows were merged into this event."""
