"""Start times from what recorders write (GUANO, AudioMoth's comment, file names) and files that lie about
themselves: cut-short WAVs, macOS `._` twins, text named `.mp3`. Real files, written with libsndfile."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio.files import find_audio_files, read_file, stream_file
from edge.audio.recording_time import recording_start_utc
from edge.card.guano import wav_with_guano
from edge.errors import AudioError

RATE = 48_000
UTC = timezone.utc


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def audiomoth_wav(path: Path, comment: str) -> Path:
    """A WAV with a LIST/INFO comment (ICMT), as AudioMoth firmware writes it."""
    with sf.SoundFile(path, "w", RATE, 1, "PCM_16") as handle:
        handle.comment = comment
        handle.write(tone(1.0))
    return path


@pytest.mark.parametrize(("comment", "expected"), [
    ("Recorded at 20:26:15 03/09/2024 (UTC+1) by AudioMoth 24F3190361DA6B7D at gain 2",
     datetime(2024, 9, 3, 19, 26, 15, tzinfo=UTC)),
    ("Recorded at 00:10:00 01/01/2025 (UTC) by AudioMoth 24F3190361DA6B7D", datetime(2025, 1, 1, 0, 10, tzinfo=UTC)),
    ("Recorded at 01:00:00 15/06/2024 (UTC-5) by AudioMoth 24F3", datetime(2024, 6, 15, 6, 0, tzinfo=UTC)),
    ("Recorded at 06:00:00 15/06/2024 (UTC+5:30) by AudioMoth 24F3", datetime(2024, 6, 15, 0, 30, tzinfo=UTC)),
])
def test_audiomoth_comment_gives_utc_with_the_offset_applied(tmp_path: Path, comment: str,
                                                             expected: datetime) -> None:
    # the file name is local time (AudioMoth with a time zone set): the comment must win over it
    path = audiomoth_wav(tmp_path / f"{expected:%Y%m%d}_203000.WAV", comment)
    assert recording_start_utc(path) == expected


def test_guano_timestamp_wins_and_needs_an_offset(tmp_path: Path) -> None:
    stamped = tmp_path / "20200101_000000.wav"
    stamped.write_bytes(wav_with_guano(tone(1.0), RATE, {"Timestamp": "2024-09-03T20:26:15+01:00"}))
    assert recording_start_utc(stamped) == datetime(2024, 9, 3, 19, 26, 15, tzinfo=UTC)
    local_only = tmp_path / "20200101_000000_b.wav"  # no offset: a local time of an unknown zone
    local_only.write_bytes(wav_with_guano(tone(1.0), RATE, {"Timestamp": "2024-09-03T20:26:15"}))
    assert recording_start_utc(local_only) == datetime(2020, 1, 1, tzinfo=UTC)


def test_file_name_or_nothing(tmp_path: Path) -> None:
    named = tmp_path / "S4A03895_20190522_000000.wav"
    sf.write(named, tone(0.5), RATE)
    assert recording_start_utc(named) == datetime(2019, 5, 22, tzinfo=UTC)
    plain = tmp_path / "night.flac"
    sf.write(plain, tone(0.5), RATE)
    assert recording_start_utc(plain) is None


def test_truncated_wav_is_analysed_with_a_warning_naming_it(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(4.0), RATE, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "20240601_050000.WAV"  # the copy stopped half way: the header still promises 4 s
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="edge.audio.files"):
        samples = read_file(cut, RATE)
    assert 1.9 * RATE < samples.shape[0] < 2.1 * RATE
    assert any(str(cut) in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.audio.files"):
        read_file(whole, RATE)
    assert not caplog.records


def test_macos_twins_are_skipped_and_text_named_mp3_is_named_as_text(tmp_path: Path,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    sf.write(tmp_path / "20240601_050000.WAV", tone(0.5), RATE)
    (tmp_path / "._20240601_050000.WAV").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble
    assert [p.name for p in find_audio_files([tmp_path])] == ["20240601_050000.WAV"]
    notes = tmp_path / "notes.mp3"
    notes.write_text("field notes, not audio\n", encoding="utf-8")
    with pytest.raises(AudioError) as info:
        list(stream_file(notes, RATE))
    assert "is a text file, not audio" in info.value.message and "pipe" not in info.value.message
    assert "MPEG" not in capfd.readouterr().err  # the MP3 decoder never saw it, so printed nothing
