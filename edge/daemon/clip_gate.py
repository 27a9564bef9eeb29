"""The privacy guard of detection clips: no clip within ``privacy_guard_s`` of a privacy hit (human speech).

A privacy hit is every analysed window in which a privacy label scores at or above its threshold, whether or not
N-of-M confirmation accepts it and whether or not it falls in the label's cooldown, and every privacy event
(whose hysteresis may extend it past such windows). A detection's clip (pre- and post-roll included) is cut when
its event closes, then held in memory until the windows that start within ``guard`` seconds after the clip's end
have been analysed: a hit within ``guard`` of the clip's audio, before or after it, withholds the clip; otherwise
it is written. Whenever the daemon stops listening (stop, end of input, scheduled off, a failure) held clips are
decided with the audio analysed so far. A held clip is never on the card: a power cut or a kill loses it (its
detection row is already logged).

Memory: hits are kept as merged spans, bounded by time, not by count: a span is forgotten once no held clip and
no clip of an event still to close can lie within ``guard`` of it. A held clip is views of the clip buffer's
16-bit chunks, so clips held together share audio; what is held beyond the clip buffer is at most ``guard``
seconds of audio plus one clip (96 KB a second at 48 kHz).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.stream.clip_buffer import Clip
from edge.stream.detector import DetectionEvent

Span = tuple[int, int]


@dataclass(frozen=True)
class HeldClip:
    """A clip waiting for the audio after it: decided once a window starting at ``decide_at`` is analysed."""

    event: DetectionEvent
    clip: Clip
    span: Span
    """The audio the clip may hold: the event widened by the pre- and post-roll."""
    decide_at: int


class PrivacySpans:
    """Privacy hits as disjoint spans, sorted; hits less than ``2 * guard`` apart are one span.

    Merging them changes no decision: an event (of positive length) clear of both hits' guards would have to
    fit in a gap longer than ``2 * guard``. So a minute of speech, continuous or broken, is one span.
    """

    def __init__(self, guard: int) -> None:
        self.guard = guard
        self._spans: list[Span] = []

    @property
    def spans(self) -> tuple[Span, ...]:
        """The spans kept, oldest first."""
        return tuple(self._spans)

    def add(self, hits: Iterable[Span]) -> None:
        """Remember ``hits`` (``(start, end)`` samples), merged with the spans kept."""
        new = list(hits)
        if not new:
            return
        merged: list[Span] = []
        for start, end in sorted([*self._spans, *new]):
            if merged and start - merged[-1][1] <= 2 * self.guard:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self._spans = merged

    def near(self, span: Span) -> bool:
        """Whether a kept hit lies within ``guard`` of ``span``."""
        return any(_near(span, hit, self.guard) for hit in self._spans)

    def forget(self, before: int) -> None:
        """Drop the spans no audio starting at or after ``before`` can lie within ``guard`` of."""
        while self._spans and self._spans[0][1] + self.guard <= before:
            self._spans.pop(0)


class ClipGate:
    """Which detections get a clip, and when: near speech never, otherwise once the guard after it was heard."""

    def __init__(self, guard_samples: int, roll_samples: tuple[int, int], spans_remembered: int) -> None:
        self.guard = guard_samples
        self.pre, self.post = roll_samples
        self.privacy = PrivacySpans(guard_samples)
        """Privacy hits that may still matter for a held clip or a clip still to come."""
        self._clipped: deque[Span] = deque(maxlen=spans_remembered)
        """Recently clipped spans: a span detected for several labels is held as one clip."""
        self._held: list[HeldClip] = []

    @property
    def held(self) -> tuple[HeldClip, ...]:
        """Clips waiting for the audio after them, oldest first."""
        return tuple(self._held)

    def heard(self, privacy: Iterable[Span]) -> None:
        """Remember privacy hits: windows at or above a privacy label's threshold, and privacy events."""
        self.privacy.add(privacy)

    def forget(self, events_from: int) -> None:
        """Drop hits that matter neither to a held clip nor to a clip of an event starting at ``events_from`` or
        later (the earliest start of an event still open, being confirmed, or to come)."""
        self.privacy.forget(min([events_from - self.pre, *(held.span[0] for held in self._held)]))

    def hold(self, detections: list[DetectionEvent], open_spans: list[Span],
             cut: Callable[[DetectionEvent], Clip | None]) -> None:
        """Cut and hold a clip of each closed detection not near speech (one per span, best score first)."""
        for event in sorted(detections, key=lambda e: -e.peak_score):
            span = (event.start_sample, event.end_sample)
            audio = (event.start_sample - self.pre, event.end_sample + self.post)
            if span in self._clipped or self._near_speech(audio, open_spans):
                continue
            self._clipped.append(span)
            clip = cut(event)
            if clip is not None:
                self._held.append(HeldClip(event, clip, audio, audio[1] + self.guard))

    def decide(self, analysed_from: int | None, open_spans: Callable[[], list[Span]]) -> list[HeldClip]:
        """Drop held clips now near speech; return (and release) those whose guard was heard.

        ``analysed_from``: start sample of the latest window analysed (every window starting before it was);
        None when no more audio will be analysed for now: every held clip is decided. ``open_spans`` gives the
        privacy events still open; it is not called when no clip is held (the daemon asks after every batch).
        """
        if not self._held:
            return []
        spans = open_spans()
        keep: list[HeldClip] = []
        ready: list[HeldClip] = []
        for held in self._held:
            if self._near_speech(held.span, spans):
                continue
            if analysed_from is None or analysed_from >= held.decide_at:
                ready.append(held)
            else:
                keep.append(held)
        self._held = keep
        return ready

    def _near_speech(self, audio: Span, open_spans: list[Span]) -> bool:
        return self.privacy.near(audio) or any(_near(audio, span, self.guard) for span in open_spans)


def _near(audio: Span, span: Span, margin: int) -> bool:
    """Whether ``audio`` overlaps ``span`` widened by ``margin`` samples on each side."""
    return audio[0] < span[1] + margin and span[0] - margin < audio[1]
