"""Turning per-window label scores into detections."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from edge.errors import ConfigError
from edge.scoring.confidence import Confidence
from edge.scoring.scorer import Scores, top_k


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
    p_correct: float | None = None
    """Fitted probability that this label is right, where the label has an installed confidence."""


@dataclass(frozen=True)
class WindowSelector:
    """Per window, the ``k`` best labels whose score reaches their threshold (no threshold: the ``k`` best).

    A label's threshold is its entry in ``per_label`` (fitted or configured), else ``threshold``.
    """

    names: tuple[str, ...]
    k: int = 1
    threshold: float | None = None
    per_label: dict[str, float] = field(default_factory=dict)
    confidence: Confidence | None = None

    def __call__(self, starts: list[int], ends: list[int], scores: Scores) -> list[Detection]:
        best = top_k(scores.score, self.k)
        limits = [self.per_label.get(name, self.threshold) for name in self.names]
        p_correct = self.confidence.p_correct(self.names, scores.score) if self.confidence else None
        detections = []
        for row, (start, end) in enumerate(zip(starts, ends)):
            for rank, col in enumerate(best[row], start=1):
                value = float(scores.score[row, col])
                limit = limits[col]
                if limit is not None and value < limit:
                    continue
                p = None if p_correct is None or np.isnan(p_correct[row, col]) else float(p_correct[row, col])
                detections.append(
                    Detection(start, end, self.names[col], value, float(scores.cosine[row, col]), rank, p)
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


@dataclass(frozen=True)
class DetectorOptions:
    """Event rules. Scores are in the scorer's mode; durations in model-rate samples."""

    enter: float
    """A window scoring at least this counts as a hit (global threshold)."""
    exit: float | None = None
    """An open event continues while windows score at least this (hysteresis; default: ``enter``)."""
    per_label_enter: dict[str, float] = field(default_factory=dict)
    """Label-specific ``enter`` thresholds; their exit is shifted by the same hysteresis gap."""
    confirm_n: int = 1
    """Hits needed among the last ``confirm_m`` windows to open an event."""
    confirm_m: int = 1
    cooldown_samples: int = 0
    """After an event of a label closes, no new one opens for this long (from the close)."""

    def validate(self, window_samples: int, hop_samples: int) -> None:
        """Raise :class:`ConfigError` when the rules can never fire or contradict each other."""
        gap = self.enter - (self.exit if self.exit is not None else self.enter)
        if gap < 0:
            raise ConfigError(f"exit threshold {self.exit} is above enter threshold {self.enter}",
                              "hysteresis needs exit <= enter")
        if not 1 <= self.confirm_n <= self.confirm_m:
            raise ConfigError(f"confirmation {self.confirm_n}-of-{self.confirm_m} is impossible",
                              "use 1 <= N <= M")
        overlapping = -(-window_samples // hop_samples)
        if self.confirm_n > overlapping:
            raise ConfigError(
                f"confirmation needs {self.confirm_n} hits but a short call is in at most {overlapping} "
                f"window(s) with this window/hop",
                f"lower N to {overlapping} or shorten the hop",
            )
        if self.cooldown_samples < 0:
            raise ConfigError("cooldown must be >= 0 s", "set cooldown to 0 to disable it")


@dataclass
class _LabelState:
    recent: list[tuple[int, int, float, float]] = field(default_factory=list)
    """Last M windows as (start, end, score, cosine); score is NaN for a miss."""
    open_event: DetectionEvent | None = None
    closed_at: int | None = None


class EventDetector:
    """Per-label hysteresis + N-of-M confirmation + cooldown; overlapping hits merge into one event.

    ``update`` takes one batch of consecutive windows and returns the events that closed; ``flush``
    closes whatever is open (end of stream, shutdown, or a gap in the audio).
    """

    def __init__(self, names: tuple[str, ...], options: DetectorOptions) -> None:
        self.names = names
        self.options = options
        gap = options.enter - (options.exit if options.exit is not None else options.enter)
        self._enter = [options.per_label_enter.get(n, options.enter) for n in names]
        self._exit = [e - gap for e in self._enter]
        self.reset()

    def reset(self) -> None:
        """Forget all state (no events are emitted)."""
        self._states = [_LabelState() for _ in self.names]

    def update(self, starts: list[int], ends: list[int], scores: Scores) -> list[DetectionEvent]:
        """Feed windows in stream order; returns events closed by them."""
        closed: list[DetectionEvent] = []
        for row, (start, end) in enumerate(zip(starts, ends)):
            for col, state in enumerate(self._states):
                event = self._step(col, state, start, end, float(scores.score[row, col]),
                                   float(scores.cosine[row, col]))
                if event is not None:
                    closed.append(event)
        return closed

    def earliest_pending_start(self) -> int | None:
        """Start sample of the oldest event still open or being confirmed (audio before it is no longer needed)."""
        starts = [s.open_event.start_sample for s in self._states if s.open_event is not None]
        starts += [s.recent[0][0] for s in self._states if s.recent]
        return min(starts, default=None)

    def open_spans(self, labels: Collection[str]) -> list[tuple[int, int]]:
        """``(start, end)`` samples of ``labels``' events still open and of their hits awaiting confirmation."""
        spans = []
        for name, state in zip(self.names, self._states):
            if name not in labels:
                continue
            if state.open_event is not None:
                spans.append((state.open_event.start_sample, state.open_event.end_sample))
            spans += [(start, end) for start, end, score, _ in state.recent if score == score]
        return spans

    def hits(self, labels: Collection[str], starts: list[int], ends: list[int],
             scores: Scores) -> list[tuple[int, int]]:
        """``(start, end)`` of every window in which one of ``labels`` scores at or above its ``enter`` threshold,
        whether or not confirmation accepts it or a cooldown keeps it from opening an event."""
        cols = [col for col, name in enumerate(self.names) if name in labels]
        if not cols:
            return []
        limits = np.array([self._enter[col] for col in cols])
        rows = np.flatnonzero((scores.score[:, cols] >= limits).any(axis=1))
        return [(starts[row], ends[row]) for row in rows]

    def flush(self) -> list[DetectionEvent]:
        """Close every open event and clear the confirmation history."""
        closed = []
        for state in self._states:
            if state.open_event is not None:
                closed.append(state.open_event)
                state.closed_at = state.open_event.end_sample
            state.open_event = None
            state.recent.clear()
        return closed

    def _step(self, col: int, state: _LabelState, start: int, end: int, score: float,
              cosine: float) -> DetectionEvent | None:
        event = state.open_event
        if event is not None:
            if score >= self._exit[col]:
                state.open_event = _extend(event, end, start, score, cosine)
                return None
            state.open_event = None
            state.closed_at = event.end_sample
            state.recent.clear()
            return event
        hit = score >= self._enter[col]
        state.recent.append((start, end, score if hit else float("nan"), cosine))
        del state.recent[: -self.options.confirm_m]
        hits = [w for w in state.recent if w[2] == w[2]]
        cooling = state.closed_at is not None and start < state.closed_at + self.options.cooldown_samples
        if hit and len(hits) >= self.options.confirm_n and not cooling:
            first = hits[0]
            peak = max(hits, key=lambda w: w[2])
            state.open_event = DetectionEvent(first[0], end, self.names[col], peak[2], peak[3], peak[0], len(hits))
            state.recent.clear()
        return None


def _extend(event: DetectionEvent, end: int, start: int, score: float, cosine: float) -> DetectionEvent:
    if score > event.peak_score:
        return DetectionEvent(event.start_sample, end, event.label, score, cosine, start, event.windows + 1)
    return DetectionEvent(event.start_sample, end, event.label, event.peak_score, event.peak_cosine,
                          event.peak_start_sample, event.windows + 1)
