"""The chunk list of a RIFF/WAVE file, read by seeking (never the audio itself): metadata and truncation."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

RIFF_HEADER_BYTES = 12
CHUNK_HEADER_BYTES = 8
MAX_METADATA_BYTES = 1 << 20
"""Metadata chunks (GUANO, LIST/INFO) larger than this are ignored: no recorder writes that much text."""


@dataclass(frozen=True)
class Chunk:
    """One chunk: its four-byte id, where its payload starts, the size its header declares, the bytes present."""

    chunk_id: bytes
    offset: int
    declared_size: int
    present_size: int

    @property
    def truncated(self) -> bool:
        return self.present_size < self.declared_size


def riff_chunks(path: Path) -> list[Chunk]:
    """Chunks of a WAV file in file order; empty for anything that is not RIFF/WAVE (FLAC, MP3, text …)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(RIFF_HEADER_BYTES)
            if len(head) < RIFF_HEADER_BYTES or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
                return []
            end = handle.seek(0, 2)
            chunks = []
            offset = RIFF_HEADER_BYTES
            while offset + CHUNK_HEADER_BYTES <= end:
                handle.seek(offset)
                chunk_id, size = struct.unpack("<4sI", handle.read(CHUNK_HEADER_BYTES))
                start = offset + CHUNK_HEADER_BYTES
                chunks.append(Chunk(chunk_id, start, size, max(0, min(size, end - start))))
                offset = start + size + (size % 2)
            return chunks
    except OSError:
        return []


def read_chunk(path: Path, chunk: Chunk) -> bytes:
    """The payload bytes of a (small, metadata) chunk; empty beyond :data:`MAX_METADATA_BYTES`."""
    if chunk.present_size > MAX_METADATA_BYTES:
        return b""
    with open(path, "rb") as handle:
        handle.seek(chunk.offset)
        return handle.read(chunk.present_size)


def truncated_data(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of the ``data`` chunk when the file holds less than its header promises."""
    for chunk in riff_chunks(path):
        if chunk.chunk_id == b"data" and chunk.truncated:
            return chunk.declared_size, chunk.present_size
    return None
