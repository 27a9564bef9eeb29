"""Sample index -> UTC for one opened audio stream, in exact integer arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.card.cardformat import MICROSECONDS_PER_SECOND, from_epoch_us


@dataclass(frozen=True)
class StreamClock:
    """UTC of sample ``s`` = ``anchor`` + (``s`` - ``anchor_sample``) / ``sample_rate``."""

    stream: int
    """1 for the first stream opened in this boot, counting up on every (re)open."""
    anchor_us: int
    """UTC of ``anchor_sample`` in microseconds since 1970."""
    anchor_sample: int
    sample_rate: int
    """Hz."""
    clock_sync: str

    def utc_us(self, sample: int) -> int:
        """Microseconds since 1970 of ``sample`` (floored to the microsecond)."""
        return self.anchor_us + (sample - self.anchor_sample) * MICROSECONDS_PER_SECOND // self.sample_rate

    def utc(self, sample: int) -> datetime:
        return from_epoch_us(self.utc_us(sample))

    def first_sample_at(self, moment_us: int) -> int:
        """The first sample whose time is at or after ``moment_us``."""
        numerator = (moment_us - self.anchor_us) * self.sample_rate
        return self.anchor_sample - (-numerator // MICROSECONDS_PER_SECOND)
