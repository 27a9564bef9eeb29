"""Every recording in ../shared/audio loads at 48 kHz mono; bad files get one clear error."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio.files import find_audio_files, read_file, stream_file
from edge.audio.recorder_names import start_time_from_name
from edge.errors import AudioError


def test_whole_shared_corpus_loads_at_model_rate(shared_audio: Path) -> None:
    files = find_audio_files([shared_audio])
    suffixes = {p.suffix for p in files}
    assert {".wav", ".WAV", ".mp3"} <= suffixes
    assert len(files) >= 25
    for path in files:
        info = sf.info(path)
        samples = read_file(path, 48_000)
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert np.isfinite(samples).all()
        expected = info.frames * 48_000 / info.samplerate
        # MP3 frame counts are estimates (SOURCES.md: soundfile and soxi disagree by up to 0.4 s)
        tolerance = 0.5 * 48_000 if path.suffix.lower() == ".mp3" else 2
        assert abs(samples.shape[0] - expected) <= tolerance, path


def test_stereo_is_downmixed_and_channel_can_be_selected(shared_audio: Path) -> None:
    path = shared_audio / "nilomr__pykanto/XC663885.wav"
    raw, rate = sf.read(path, dtype="float32")
    assert raw.ndim == 2 and rate == 44_100
    mixed = read_file(path, 44_100)
    left = read_file(path, 44_100, channel=0)
    np.testing.assert_allclose(mixed, raw.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(left, raw[:, 0], atol=1e-6)


def test_streamed_chunks_are_contiguous_from_sample_zero(shared_audio: Path) -> None:
    chunks = list(stream_file(shared_audio / "kitzeslab__opensoundscape/1min.wav", 48_000, block_s=0.7))
    assert chunks[0].start_sample == 0
    for before, after in zip(chunks, chunks[1:]):
        assert after.start_sample == before.end_sample
    assert chunks[-1].end_sample == 60 * 48_000


def test_truncated_wav_loses_nothing_before_the_cut(tmp_path: Path, shared_audio: Path) -> None:
    source = shared_audio / "Nachtzuster__BirdNET-Pi/Pica pica_30s.wav"
    data = source.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    samples = read_file(cut, 48_000)
    full = read_file(source, 48_000)
    assert samples.shape[0] >= full.shape[0] // 2 - 48_000
    np.testing.assert_array_equal(samples[:48_000], full[:48_000])


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"not audio at all" * 100])
def test_unreadable_files_raise_one_line_audio_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        read_file(path, 48_000)
    assert "bad.wav" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        read_file(tmp_path / "gone.wav", 48_000)


@pytest.mark.parametrize(("name", "expected"), [
    ("20210502_040000.WAV", datetime(2021, 5, 2, 4, 0, 0, tzinfo=timezone.utc)),
    ("S4A03895_20190522_060000.wav", datetime(2019, 5, 22, 6, 0, 0, tzinfo=timezone.utc)),
    ("0166_20240531_223911.wav", datetime(2024, 5, 31, 22, 39, 11, tzinfo=timezone.utc)),
    ("20170701_213954-MYOMYS-LR_0_0.5.wav", datetime(2017, 7, 1, 21, 39, 54, tzinfo=timezone.utc)),
    ("Pica pica_30s.wav", None),
    ("20211399_250000.wav", None),
])
def test_recorder_file_names_give_utc_start(name: str, expected: datetime | None) -> None:
    assert start_time_from_name(Path(name)) == expected
