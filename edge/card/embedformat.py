"""The on-card window-embedding segment format (``embeddings/*.emb``), shared by the writer and the collector.

A segment is one header followed by fixed-size records, so a reader finds every record by arithmetic and a
power cut can only leave a short tail (a partial record), which is reported and skipped::

    header   = MAGIC (8 bytes) | uint32 LE n | n bytes of UTF-8 JSON (SegmentHeader fields)
    record   = int32 stream | uint8 clock_sync code | 3 zero bytes
             | int64 start_sample | int64 end_sample | int64 start_utc_us (INT64_MIN: unknown)
             | float32 scale | dim × (float16, or int8 × scale) | uint32 crc32 of the bytes before it

All integers little-endian. ``start_sample``/``end_sample`` are model-rate sample indices on the stream's
timeline (unit) or offsets into ``source_path`` (``analyze --embeddings``). A record whose CRC does not match
was damaged after it was written (never by a power cut) and is reported as a problem.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edge.card.cardformat import CLOCK_SYNC_STATES, CardLogError

EMBEDDINGS_DIR = "embeddings"
EXTENSION = "emb"
MAGIC = b"BLEEMB\x00\x01"
"""File signature; the last byte is the format version."""
FORMAT_VERSION = 1
HEADER_LENGTH = struct.Struct("<I")
UNKNOWN_UTC_US = np.iinfo(np.int64).min
"""``start_utc_us`` of a window whose wall-clock time is not known (a recording without a start time)."""
EMBEDDING_DTYPES = ("fp16", "int8", "off")
"""``storage.embeddings``: how each window's embedding is kept on the card (``off``: not at all)."""
INT8_MAX = 127


@dataclass(frozen=True)
class SegmentHeader:
    """What every record of one segment shares."""

    unit_id: str
    deployment_id: str
    boot_id: str
    sample_rate: int
    """Model rate in Hz: samples of ``start_sample``/``end_sample`` are at this rate."""
    dim: int
    """Embedding length (512 for BioLingual)."""
    dtype: str
    """``fp16`` or ``int8`` (with a per-record scale)."""
    model_sha256: str
    """sha256 of the model file that computed the embeddings: a season never mixes embedding spaces silently."""
    source_path: str | None = None
    """The recording the windows were cut from (``analyze --embeddings``); None on a unit."""
    source_start_utc: str | None = None
    """ISO-8601 UTC start of ``source_path`` when known."""
    embedding_space: str = ""
    """The bundle's embedding space (:mod:`edge.model.space`), the same whatever precision or engine computed the
    embeddings; ``""`` in segments written before spaces were named (then ``model_sha256`` is the key)."""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Header keys this reader does not know (written by a newer writer), kept rather than refused."""

    def __post_init__(self) -> None:
        if self.dtype not in ("fp16", "int8"):
            raise CardLogError(f"embedding dtype {self.dtype!r} is not fp16 or int8",
                               "set storage.embeddings to fp16, int8 or off")

    def encode(self) -> bytes:
        payload = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")
        return MAGIC + HEADER_LENGTH.pack(len(payload)) + payload


def record_dtype(dim: int, dtype: str) -> np.dtype:
    """The packed numpy dtype of one record (CRC included)."""
    vector = np.dtype("<f2") if dtype == "fp16" else np.dtype("i1")
    return np.dtype([("stream", "<i4"), ("clock_sync", "u1"), ("reserved", "V3"), ("start_sample", "<i8"),
                     ("end_sample", "<i8"), ("start_utc_us", "<i8"), ("scale", "<f4"),
                     ("vector", vector, (dim,)), ("crc", "<u4")])


def record_bytes(dim: int, dtype: str) -> int:
    """Bytes one window takes on the card (1064 for 512-d fp16, 552 for int8)."""
    return record_dtype(dim, dtype).itemsize


def quantise(vectors: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``(B, D)`` float32 -> (stored vectors, per-row float32 scale); fp16 rows have scale 1."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if dtype == "fp16":
        return vectors.astype(np.float16), np.ones(vectors.shape[0], np.float32)
    peak = np.abs(vectors).max(axis=1)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    return np.clip(np.rint(vectors / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8), scale


def dequantise(records: np.ndarray) -> np.ndarray:
    """Structured records -> ``(N, D)`` float32 embeddings as computed (up to fp16/int8 rounding)."""
    return records["vector"].astype(np.float32) * records["scale"][:, None]


def encode_records(header: SegmentHeader, stream: int, clock_sync: str, starts: np.ndarray, ends: np.ndarray,
                   utc_us: np.ndarray, vectors: np.ndarray) -> bytes:
    """Pack a batch of windows (``vectors`` ``(B, dim)`` float32) into records with their CRCs."""
    if vectors.ndim != 2 or vectors.shape[1] != header.dim:
        raise CardLogError(f"embeddings of shape {vectors.shape} do not match the segment's dim {header.dim}",
                           "the model's output size changed within one run; restart the unit")
    dtype = record_dtype(header.dim, header.dtype)
    records = np.zeros(vectors.shape[0], dtype)
    records["stream"] = stream
    records["clock_sync"] = CLOCK_SYNC_STATES.index(clock_sync)
    records["start_sample"] = starts
    records["end_sample"] = ends
    records["start_utc_us"] = utc_us
    records["vector"], records["scale"] = quantise(vectors, header.dtype)
    raw = records.view(np.uint8).reshape(len(records), dtype.itemsize)
    body = dtype.itemsize - 4
    records["crc"] = [zlib.crc32(raw[i, :body].tobytes()) for i in range(len(records))]
    return records.tobytes()


@dataclass(frozen=True)
class EmbeddingSegment:
    """One segment as read: its header, its good records (structured array), and what was wrong with the rest."""

    path: Path
    header: SegmentHeader | None
    records: np.ndarray
    notes: list[str]
    """What a power cut leaves and the writer expects (a torn last record, an empty file)."""
    problems: list[str]
    """Damage the writer never produces (bad signature, CRC mismatch)."""


def _read_header(data: bytes, path: Path) -> tuple[SegmentHeader, int]:
    if data[: len(MAGIC) - 1] != MAGIC[:-1]:
        raise ValueError("not an embedding segment (bad signature)")
    if data[len(MAGIC) - 1] > FORMAT_VERSION:
        raise ValueError(f"format version {data[len(MAGIC) - 1]} is newer than this reader's {FORMAT_VERSION}; "
                         "upgrade biolingual-edge")
    start = len(MAGIC) + HEADER_LENGTH.size
    (length,) = HEADER_LENGTH.unpack_from(data, len(MAGIC))
    if len(data) < start + length:
        raise EOFError
    raw = json.loads(data[start : start + length].decode("utf-8"))
    known = {f.name for f in fields(SegmentHeader)}
    extra = {k: v for k, v in raw.items() if k not in known}
    return SegmentHeader(**{k: v for k, v in raw.items() if k in known and k != "extra"},
                         extra={**raw.get("extra", {}), **extra}), start + length


def read_embedding_segment(path: Path) -> EmbeddingSegment:
    """Read a segment; a torn tail is noted, damaged records reported and skipped, nothing raised."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return EmbeddingSegment(path, None, np.zeros(0, record_dtype(1, "fp16")), [],
                                [f"{path}: unreadable ({e.strerror})"])
    return decode_embedding_segment(data, path)


def decode_embedding_segment(data: bytes, path: Path) -> EmbeddingSegment:
    """A segment's bytes (a file's, or a header and records kept elsewhere, named ``path``) read as
    :func:`read_embedding_segment` reads the file."""
    empty = np.zeros(0, record_dtype(1, "fp16"))
    if len(data) < len(MAGIC) + HEADER_LENGTH.size:
        return EmbeddingSegment(path, None, empty, [f"{path}: empty or torn header (never confirmed written)"], [])
    try:
        header, offset = _read_header(data, path)
    except EOFError:
        return EmbeddingSegment(path, None, empty, [f"{path}: torn header (never confirmed written)"], [])
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        return EmbeddingSegment(path, None, empty, [], [f"{path}: {e}; skipped"])
    dtype = record_dtype(header.dim, header.dtype)
    body = len(data) - offset
    whole = body // dtype.itemsize
    notes = []
    if body % dtype.itemsize:
        notes.append(f"{path}: torn last record ({body % dtype.itemsize} bytes) skipped; "
                     "it was never confirmed written")
    records = np.frombuffer(data, dtype, count=whole, offset=offset)
    view = memoryview(data)
    size, crc_at = dtype.itemsize, dtype.itemsize - 4
    starts = range(offset, offset + whole * size, size)
    good = np.fromiter((zlib.crc32(view[at : at + crc_at]) for at in starts), np.uint32, whole) == records["crc"]
    problems = []
    if not good.all():
        problems.append(f"{path}: {int((~good).sum())} record(s) fail their CRC (card corruption?); skipped")
        records = records[good]
    return EmbeddingSegment(path, header, records, notes, problems)
