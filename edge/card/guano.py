"""GUANO metadata (https://github.com/riggsd/guano-spec): a WAV file's ``guan`` chunk, or a FLAC file's comment."""

from __future__ import annotations

import errno
import io
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from edge.stream.clip_buffer import to_pcm16

GUANO_CHUNK = b"guan"
GUANO_VERSION = "1.0"
CLIP_SUBTYPE = "PCM_16"


def guano_text(fields: dict[str, str]) -> bytes:
    """``Key: Value`` lines after the mandatory version line; newlines in values escaped as the spec says."""
    lines = [f"GUANO|Version: {GUANO_VERSION}"]
    lines += [f"{key}: {value}".replace("\n", "\\n") for key, value in fields.items()]
    return "\n".join(lines).encode("utf-8")


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Clip samples as 16-bit PCM: int16 as given, float32 (nominal [-1, 1]) by :func:`to_pcm16`."""
    return audio if audio.dtype == np.int16 else to_pcm16(audio)


def wav_with_guano(audio: np.ndarray, sample_rate: int, fields: dict[str, str]) -> bytes:
    """A 16-bit PCM WAV of ``audio`` ((N,) int16, or float32 in [-1, 1]) with a ``guan`` chunk appended."""
    buffer = io.BytesIO()
    write_wav_with_guano(buffer, [audio], sample_rate, fields)
    return buffer.getvalue()


def flac_with_guano(audio: np.ndarray, sample_rate: int, fields: dict[str, str]) -> bytes:
    """A 16-bit FLAC of ``audio`` ((N,) int16, or float32 in [-1, 1]) with the GUANO text as its Vorbis comment."""
    buffer = io.BytesIO()
    write_flac_with_guano(buffer, [audio], sample_rate, fields)
    return buffer.getvalue()


def write_wav_with_guano(handle: BinaryIO, pieces: Sequence[np.ndarray], sample_rate: int,
                         fields: dict[str, str]) -> None:
    """:func:`wav_with_guano` of the concatenated ``pieces``, encoded piece by piece into the empty, seekable
    ``handle`` (the audio is never copied whole)."""
    _encode(handle, pieces, sample_rate, "WAV", None)
    text = guano_text(fields)
    handle.seek(0, io.SEEK_END)
    handle.write(GUANO_CHUNK + struct.pack("<I", len(text)) + text + (b"\0" if len(text) % 2 else b""))
    riff_size = handle.tell() - 8
    handle.seek(4)
    handle.write(struct.pack("<I", riff_size))
    handle.seek(0, io.SEEK_END)


def write_flac_with_guano(handle: BinaryIO, pieces: Sequence[np.ndarray], sample_rate: int,
                          fields: dict[str, str]) -> None:
    """:func:`flac_with_guano` of the concatenated ``pieces``, encoded piece by piece into ``handle``."""
    _encode(handle, pieces, sample_rate, "FLAC", guano_text(fields).decode("utf-8"))


class _Recording:
    """A file handle for libsndfile's callbacks that keeps the first ``OSError`` (a callback cannot raise)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self.handle.write(data)
            except OSError as e:
                self.error = e
        return 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.handle, name)


def _encode(handle: BinaryIO, pieces: Sequence[np.ndarray], sample_rate: int, fmt: str, comment: str | None) -> None:
    """16-bit ``fmt`` of the pieces into ``handle``; a failed write (full card) raises its ``OSError``."""
    recording = _Recording(handle)
    try:
        with sf.SoundFile(recording, "w", sample_rate, 1, subtype=CLIP_SUBTYPE, format=fmt) as encoder:
            if comment is not None:
                encoder.comment = comment
            for piece in pieces:
                encoder.write(pcm16(piece))
    except (RuntimeError, AssertionError, sf.SoundFileError) as e:  # soundfile asserts on a short write
        raise recording.error or OSError(errno.EIO, f"clip encoder: {e}") from e
    if recording.error is not None:
        raise recording.error


def _parse(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip().replace("\\n", "\n")
    return fields


def read_guano(path: Path) -> dict[str, str]:
    """The GUANO fields of a WAV or FLAC clip (empty when it has none)."""
    if path.suffix.lower() == ".flac":
        with sf.SoundFile(path) as handle:
            return _parse(handle.comment or "")
    data = path.read_bytes()
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk_id == GUANO_CHUNK:
            return _parse(data[offset + 8:offset + 8 + size].decode("utf-8"))
        offset += 8 + size + (size % 2)
    return {}
