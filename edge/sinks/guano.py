"""GUANO metadata (https://github.com/riggsd/guano-spec) in a WAV file's ``guan`` chunk."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

GUANO_CHUNK = b"guan"
GUANO_VERSION = "1.0"
CLIP_SUBTYPE = "PCM_16"


def guano_text(fields: dict[str, str]) -> bytes:
    """``Key: Value`` lines after the mandatory version line; newlines in values escaped as the spec says."""
    lines = [f"GUANO|Version: {GUANO_VERSION}"]
    lines += [f"{key}: {value}".replace("\n", "\\n") for key, value in fields.items()]
    return "\n".join(lines).encode("utf-8")


def wav_with_guano(audio: np.ndarray, sample_rate: int, fields: dict[str, str]) -> bytes:
    """A 16-bit PCM WAV of ``audio`` (shape (N,) float32 in [-1, 1]) with a ``guan`` chunk appended."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, subtype=CLIP_SUBTYPE, format="WAV")
    text = guano_text(fields)
    chunk = GUANO_CHUNK + struct.pack("<I", len(text)) + text + (b"\0" if len(text) % 2 else b"")
    wav = bytearray(buffer.getvalue() + chunk)
    struct.pack_into("<I", wav, 4, len(wav) - 8)
    return bytes(wav)


def read_guano(path: Path) -> dict[str, str]:
    """The GUANO fields of a WAV file (empty when it has none)."""
    data = path.read_bytes()
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk_id == GUANO_CHUNK:
            text = data[offset + 8:offset + 8 + size].decode("utf-8")
            fields = {}
            for line in text.splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    fields[key.strip()] = value.strip().replace("\\n", "\n")
            return fields
        offset += 8 + size + (size % 2)
    return {}
