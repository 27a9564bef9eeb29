"""The capture ring: copies only, never loses frames silently."""

from __future__ import annotations

import ctypes
import mmap

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


def resident_pages(array: np.ndarray) -> int:
    """Pages of ``array``'s memory the kernel holds resident (mincore(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    address = array.ctypes.data // mmap.PAGESIZE * mmap.PAGESIZE
    length = array.ctypes.data + array.nbytes - address
    pages = -(-length // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(length), vector) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(byte & 1 for byte in vector)


def test_a_ring_that_keeps_up_holds_only_its_pending_frames_in_memory() -> None:
    rate, block = 48_000, 4_800  # 0.1 s blocks into a 30 s ring, as on a unit
    ring = RingBuffer(30 * rate, 1)
    got = []
    for start in range(0, 3 * ring.capacity, block):
        ring.write(frames(start, block))
        read = ring.read(timeout=0.0)
        assert read is not None and read.overwritten == 0
        got.append(read.frames[:, 0].copy())
        # the just-read block is back with the kernel: at most the pages at its two edges stay
        assert resident_pages(ring._data) <= 2, start
    np.testing.assert_array_equal(np.concatenate(got), np.arange(3 * ring.capacity, dtype=np.float32))


def test_pending_frames_stay_in_memory_until_read() -> None:
    ring = RingBuffer(48_000, 2)
    ring.write(np.ones((30_000, 2), dtype=np.float32))
    assert resident_pages(ring._data) * mmap.PAGESIZE >= 30_000 * 8
    read = ring.read(timeout=0.0)
    assert read is not None and read.frames.shape == (30_000, 2) and np.all(read.frames == 1)
    assert resident_pages(ring._data) <= 2
