"""Pieces of any size give exactly the windows (and inference batches) of one pass over the whole file;
files at other rates read any range exactly as a whole-file read gives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio.files import read_file, stream_file
from edge.audio.seekable import SeekableAudio
from edge.audio.windowing import Windower
from edge.batch.pieces import WindowGrid, piece_batches, plan_pieces
from edge.stream.pipeline import batched_windows

RATE = 48_000
GRID = WindowGrid(window=1_000, hop=300, batch=3)


def single_pass(path: Path) -> list[list[tuple[int, np.ndarray]]]:
    batches = batched_windows(stream_file(path, RATE), Windower(GRID.window, GRID.hop), GRID.batch)
    return [[(w.start_sample, w.samples) for w in batch] for batch in batches]


def by_units(path: Path, unit_samples: int) -> tuple[int, list[list[tuple[int, np.ndarray]]]]:
    pieces = plan_pieces([path], RATE, GRID, unit_samples)
    batches = [batch for piece in pieces for batch in piece_batches(piece, RATE, GRID)]
    return len(pieces), [[(w.start_sample, w.samples) for w in batch] for batch in batches]


@pytest.mark.parametrize("frames", [1, 999, 1_000, 1_001, 1_900, 2_800, 10_007])
@pytest.mark.parametrize("unit_samples", [1, 300, 901, 2_700, 5_000, 10**9])
def test_units_of_any_size_equal_one_pass(tmp_path: Path, frames: int, unit_samples: int) -> None:
    rng = np.random.default_rng(frames)
    path = tmp_path / "stereo.wav"
    sf.write(path, rng.uniform(-1, 1, (frames, 2)).astype(np.float32), RATE, subtype="PCM_16")
    expected = single_pass(path)
    count, got = by_units(path, unit_samples)
    assert [[s for s, _ in b] for b in got] == [[s for s, _ in b] for b in expected]
    for got_batch, expected_batch in zip(got, expected):
        for (_, a), (_, b) in zip(got_batch, expected_batch):
            np.testing.assert_array_equal(a, b)
    if unit_samples <= 901 and frames >= 2_800:
        assert count > 1  # the file really was split


@pytest.mark.parametrize("in_rate", [22_050, 32_000, 44_100, 250_000])
@pytest.mark.parametrize("unit_samples", [300, 2_700, 10**9])
def test_resampled_files_split_exactly(tmp_path: Path, in_rate: int, unit_samples: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.audio.seekable.SEGMENT_S", 0.01)  # many resampling segments in a short file
    path = tmp_path / "other-rate.wav"
    sf.write(path, np.random.default_rng(in_rate).uniform(-1, 1, in_rate // 10).astype(np.float32), in_rate)
    _, whole = by_units(path, 10**9)
    count, got = by_units(path, unit_samples)
    assert [[s for s, _ in b] for b in got] == [[s for s, _ in b] for b in whole]
    for got_batch, whole_batch in zip(got, whole):
        for (_, a), (_, b) in zip(got_batch, whole_batch):
            np.testing.assert_array_equal(a, b)
    streamed = single_pass(path)  # the streaming resampler of the daemon: the same audio to float rounding
    assert [[s for s, _ in b] for b in streamed] == [[s for s, _ in b] for b in whole]
    worst = max(np.abs(a - b).max() for gb, sb in zip(whole, streamed) for (_, a), (_, b) in zip(gb, sb))
    assert worst < 1e-5
    assert count > 1 or unit_samples == 10**9


def test_any_range_reads_as_the_whole_file(tmp_path: Path, shared_audio: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.audio.seekable.SEGMENT_S", 0.5)
    path = shared_audio / "kitzeslab__opensoundscape/great_plains_toad.wav"  # 44.1 kHz
    with SeekableAudio(path, RATE) as audio:
        whole = audio.read(0, audio.total)
        rng = np.random.default_rng(1)
        for start in rng.integers(0, audio.total - 1, 20):
            end = int(rng.integers(start + 1, min(audio.total, start + 100_000) + 1))
            np.testing.assert_array_equal(audio.read(int(start), end), whole[start:end])
    assert whole.shape == read_file(path, RATE).shape
    assert np.abs(whole - read_file(path, RATE)).max() < 1e-5


def test_flac_and_other_rates_split_and_mp3_stays_whole(tmp_path: Path, shared_audio: Path) -> None:
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, 9_000).astype(np.float32)
    flac = tmp_path / "a.flac"
    sf.write(flac, signal, RATE)
    slow = tmp_path / "b.wav"
    sf.write(slow, signal, 24_000)
    mp3 = shared_audio / "kitzeslab__opensoundscape/13738.mp3"
    pieces = plan_pieces([flac, slow, mp3], RATE, GRID, 900)
    assert [u.file_index for u in pieces].count(0) == 9  # 900-sample steps up to the last regular window
    assert {u.total for u in pieces if u.file_index == 1} == {18_000}
    assert [(u.path, u.length) for u in pieces if u.file_index == 2] == [(mp3, None)]
    assert [u.index for u in pieces] == list(range(len(pieces)))
    _, got = by_units(flac, 900)
    assert [[s for s, _ in b] for b in got] == [[s for s, _ in b] for b in single_pass(flac)]


def test_unit_starts_stay_on_the_batch_grid(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(50_000, dtype=np.float32), RATE)
    pieces = plan_pieces([path], RATE, GRID, 1_000)
    assert all(u.start_sample % GRID.batch_span == 0 for u in pieces)
    assert sum(u.length or 0 for u in pieces) == 50_000
    assert pieces[-1].is_last_of_file and not any(u.is_last_of_file for u in pieces[:-1])
