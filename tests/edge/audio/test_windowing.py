"""Windows land on the integer sample grid and do not depend on how the stream is chunked."""

from __future__ import annotations

import numpy as np
import pytest

from edge.audio.chunk import AudioChunk
from edge.audio.windowing import Windower

RATE = 1000


def cut(signal: np.ndarray, chunk: int, window: int, hop: int) -> list[tuple[int, np.ndarray]]:
    windower = Windower(window, hop)
    out = []
    for start in range(0, signal.shape[0], chunk):
        piece = signal[start : start + chunk]
        out += [(w.start_sample, w.samples) for w in windower.push(AudioChunk(piece, RATE, start))]
    return out + [(w.start_sample, w.samples) for w in windower.flush()]


@pytest.mark.parametrize("chunk", [1, 7, 441, 4096, 10_000, 25_000])
def test_chunk_size_invariance(chunk: int) -> None:
    signal = np.random.default_rng(1).standard_normal(23_456).astype(np.float32)
    reference = cut(signal, signal.shape[0], 10_000, 5_000)
    windows = cut(signal, chunk, 10_000, 5_000)
    assert [s for s, _ in windows] == [s for s, _ in reference] == [0, 5_000, 10_000, 13_456]
    for (_, a), (_, b) in zip(windows, reference):
        np.testing.assert_array_equal(a, b)
    for start, samples in windows:
        np.testing.assert_array_equal(samples, signal[start : start + 10_000])


def test_short_stream_gives_one_short_window_and_exact_grid_gives_no_tail() -> None:
    assert [(s, w.shape[0]) for s, w in cut(np.ones(3_000, np.float32), 1_000, 10_000, 5_000)] == [(0, 3_000)]
    assert [s for s, _ in cut(np.ones(20_000, np.float32), 3_000, 10_000, 5_000)] == [0, 5_000, 10_000]
    assert cut(np.ones(0, np.float32), 1, 10_000, 5_000) == []


def test_gapped_chunk_is_rejected() -> None:
    windower = Windower(100, 50)
    windower.push(AudioChunk(np.zeros(30, np.float32), RATE, 0))
    with pytest.raises(ValueError, match="expected 30"):
        windower.push(AudioChunk(np.zeros(30, np.float32), RATE, 40))


def test_hop_longer_than_window_is_rejected() -> None:
    with pytest.raises(ValueError):
        Windower(100, 150)
