"""The privacy guard of detection clips: no clip within ``privacy_guard_s`` of a privacy hit (human speech).

A detection's clip is cut when its event closes, then held in memory until the windows that start within
``guard`` seconds after the event's end have been analysed: speech heard in them (a privacy hit closed, still
open, or awaiting its N-of-M confirmation) withholds the clip; otherwise it is written. Whenever the daemon
stops listening (stop, end of input, scheduled off, a failure) held clips are decided with the audio analysed
so far. A held clip is never on the card: a power cut or a kill loses it (its detection row is already logged).

Memory: a held clip is views of the clip buffer's 16-bit chunks, so clips held together share audio; what is
held beyond the clip buffer is at most ``guard`` seconds of audio plus one clip (96 KB a second at 48 kHz).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge.stream.clip_buffer import Clip
from edge.stream.detector import DetectionEvent

Span = tuple[int, int]


@dataclass(frozen=True)
class HeldClip:
    """A clip waiting for the audio after it: decided once a window starting at ``decide_at`` is analysed."""

    event: DetectionEvent
    clip: Clip
    decide_at: int


class ClipGate:
    """Which detections get a clip, and when: near speech never, otherwise once the guard after it was heard."""

    def __init__(self, guard_samples: int, hits_remembered: int, spans_remembered: int) -> None:
        self.guard = guard_samples
        self._hits: deque[Span] = deque(maxlen=hits_remembered)
        """Recent privacy hits (closed): the clip guard's memory."""
        self._clipped: deque[Span] = deque(maxlen=spans_remembered)
        """Recently clipped spans: a span detected for several labels is held as one clip."""
        self._held: list[HeldClip] = []

    @property
    def held(self) -> tuple[HeldClip, ...]:
        """Clips waiting for the audio after them, oldest first."""
        return tuple(self._held)

    def heard(self, privacy: list[Span]) -> None:
        """Remember privacy hits that closed (or were cut short by the end of a stream)."""
        self._hits.extend(privacy)

    def hold(self, detections: list[DetectionEvent], open_spans: list[Span],
             cut: Callable[[DetectionEvent], Clip | None]) -> None:
        """Cut and hold a clip of each closed detection not near speech (one per span, best score first)."""
        for event in sorted(detections, key=lambda e: -e.peak_score):
            span = (event.start_sample, event.end_sample)
            if self._near_speech(event, open_spans) or span in self._clipped:
                continue
            self._clipped.append(span)
            clip = cut(event)
            if clip is not None:
                self._held.append(HeldClip(event, clip, event.end_sample + self.guard))

    def decide(self, analysed_from: int | None, open_spans: Callable[[], list[Span]]) -> list[HeldClip]:
        """Drop held clips now near speech; return (and release) those whose guard was heard.

        ``analysed_from``: start sample of the latest window analysed (every window starting before it was);
        None when no more audio will be analysed for now: every held clip is decided. ``open_spans`` gives the
        privacy spans still open; it is not called when no clip is held (the daemon asks after every batch).
        """
        if not self._held:
            return []
        spans = open_spans()
        keep: list[HeldClip] = []
        ready: list[HeldClip] = []
        for held in self._held:
            if self._near_speech(held.event, spans):
                continue
            if analysed_from is None or analysed_from >= held.decide_at:
                ready.append(held)
            else:
                keep.append(held)
        self._held = keep
        return ready

    def _near_speech(self, event: DetectionEvent, open_spans: list[Span]) -> bool:
        return any(_near(event, span, self.guard) for span in (*self._hits, *open_spans))


def _near(event: DetectionEvent, span: Span, margin: int) -> bool:
    """Whether ``event`` overlaps ``span`` widened by ``margin`` samples on each side."""
    return event.start_sample < span[1] + margin and span[0] - margin < event.end_sample
