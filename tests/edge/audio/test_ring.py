"""The capture ring: copies only, never loses frames silently."""

from __future__ import annotations

import numpy as np

from edge.audio.ring import RingBuffer


def frames(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)[:, None]


def test_reads_return_everything_written_in_order_across_the_wrap() -> None:
    ring = RingBuffer(10, 1)
    got = []
    for start in range(0, 35, 7):
        ring.write(frames(start, 7))
        read = ring.read(timeout=0.0)
        assert read is not None and read.overwritten == 0 and read.first_frame == start
        got.append(read.frames[:, 0])
    np.testing.assert_array_equal(np.concatenate(got), np.arange(35))


def test_falling_behind_overwrites_the_oldest_and_counts_them() -> None:
    ring = RingBuffer(10, 1)
    for start in range(0, 25, 5):
        ring.write(frames(start, 5))
    read = ring.read(timeout=0.0)
    assert read is not None
    assert read.overwritten == 15 and read.first_frame == 15
    np.testing.assert_array_equal(read.frames[:, 0], np.arange(15, 25))
    assert ring.read(timeout=0.01) is None
