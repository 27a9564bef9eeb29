"""The effort table: seconds of audio actually analysed in each UTC minute, so an absence can be trusted."""

from __future__ import annotations

from dataclasses import dataclass

from edge.card.cardformat import MICROSECONDS_PER_MINUTE, format_utc, from_epoch_us
from edge.card.streamclock import StreamClock

ANALYSED_DECIMALS = 3
"""``analysed_s`` is written in milliseconds resolution."""


@dataclass
class MinuteEffort:
    """Analysed audio inside one UTC minute of one stream."""

    minute_us: int
    clock: StreamClock
    samples: int
    first_sample: int
    last_sample: int
    """One past the last analysed sample in this minute."""


@dataclass(frozen=True)
class EffortRow:
    minute_utc: str
    stream: int
    clock_sync: str
    first_sample: int
    last_sample: int
    analysed_s: float


class EffortCounter:
    """Accumulates analysed spans into per-minute totals; overlapping spans (window overlap) count once."""

    def __init__(self) -> None:
        self._minutes: dict[tuple[int, int], MinuteEffort] = {}
        self._covered_until: dict[int, int] = {}

    def add(self, clock: StreamClock, start_sample: int, end_sample: int) -> None:
        """Count ``[start_sample, end_sample)`` of ``clock``'s stream as analysed."""
        start = max(start_sample, self._covered_until.get(clock.stream, start_sample))
        if end_sample <= start:
            return
        self._covered_until[clock.stream] = end_sample
        while start < end_sample:
            minute_us = clock.utc_us(start) // MICROSECONDS_PER_MINUTE * MICROSECONDS_PER_MINUTE
            stop = min(end_sample, clock.first_sample_at(minute_us + MICROSECONDS_PER_MINUTE))
            key = (clock.stream, minute_us)
            entry = self._minutes.get(key)
            if entry is None:
                self._minutes[key] = MinuteEffort(minute_us, clock, stop - start, start, stop)
            else:
                entry.samples += stop - start
                entry.last_sample = stop
            start = stop

    def take_rows(self, final: bool = False) -> list[EffortRow]:
        """Rows for minutes that can no longer grow (an older minute or stream), or for all when ``final``."""
        newest: dict[int, int] = {}
        for stream, minute_us in self._minutes:
            newest[stream] = max(newest.get(stream, minute_us), minute_us)
        latest_stream = max(newest, default=0)
        rows = []
        for key in sorted(self._minutes):
            stream, minute_us = key
            if final or stream < latest_stream or minute_us < newest[stream]:
                entry = self._minutes.pop(key)
                rows.append(EffortRow(format_utc(from_epoch_us(minute_us)), stream, entry.clock.clock_sync,
                                      entry.first_sample, entry.last_sample,
                                      round(entry.samples / entry.clock.sample_rate, ANALYSED_DECIMALS)))
        return rows
