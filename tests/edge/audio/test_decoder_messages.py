"""libmpg123's bare stderr lines become one warning naming the file; nothing else printed is lost."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge.audio.decoder_messages import DecoderMessages
from edge.audio.files import read_file

DAMAGED_MP3 = "kitzeslab__opensoundscape/13738.mp3"
"""A real MP3 with two frames libmpg123 cannot dequantize."""


def test_a_damaged_mp3_is_named_once_and_the_bare_decoder_lines_are_gone(
        shared_audio: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.WARNING):
        audio = read_file(shared_audio / DAMAGED_MP3, 48_000)
    assert audio.size > 0
    warnings = [r.getMessage() for r in caplog.records if "decoder" in r.getMessage()]
    assert len(warnings) == 1
    assert str(shared_audio / DAMAGED_MP3) in warnings[0] and "libmpg123: dequantization failed!" in warnings[0]
    assert "dequantization" not in capfd.readouterr().err


def test_other_output_passes_through_and_wav_files_are_untouched(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    messages = DecoderMessages(tmp_path / "night.mp3")
    with caplog.at_level(logging.WARNING), messages.held():
        os.write(2, b"[src/libmpg123/layer3.c:INT123_do_layer3():1804] error: dequantization failed!\n")
        os.write(2, b"something else entirely\n")
    messages.report()
    assert "something else entirely" in capfd.readouterr().err
    assert any("night.mp3" in r.getMessage() for r in caplog.records)
    assert not DecoderMessages(tmp_path / "night.wav").active
