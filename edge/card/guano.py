"""GUANO metadata (https://github.com/riggsd/guano-spec): a WAV file's ``guan`` chunk, or a FLAC file's comment."""

from __future__ import annotations

import io
import struct
from pathlib import Path

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
    sf.write(buffer, pcm16(audio), sample_rate, subtype=CLIP_SUBTYPE, format="WAV")
    text = guano_text(fields)
    chunk = GUANO_CHUNK + struct.pack("<I", len(text)) + text + (b"\0" if len(text) % 2 else b"")
    wav = bytearray(buffer.getvalue() + chunk)
    struct.pack_into("<I", wav, 4, len(wav) - 8)
    return bytes(wav)


def flac_with_guano(audio: np.ndarray, sample_rate: int, fields: dict[str, str]) -> bytes:
    """A 16-bit FLAC of ``audio`` ((N,) int16, or float32 in [-1, 1]) with the GUANO text as its Vorbis comment."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", sample_rate, 1, subtype=CLIP_SUBTYPE, format="FLAC") as handle:
        handle.comment = guano_text(fields).decode("utf-8")
        handle.write(pcm16(audio))
    return buffer.getvalue()


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
