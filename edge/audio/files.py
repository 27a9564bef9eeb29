"""Audio files (WAV/FLAC/MP3/OGG via soundfile) read as a stream of 48 kHz mono chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.audio.chunk import AudioChunk, downmix
from edge.audio.resample import StreamResampler
from edge.errors import AudioError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".aif", ".aiff"})
READ_BLOCK_S = 2.0
"""Seconds of source audio decoded per read: bounds memory for hour-long files."""


def find_audio_files(paths: list[Path]) -> list[Path]:
    """Files given directly, plus every audio file under given folders (recursive, case-insensitive suffix)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            found.append(path)
    return found


def _open(path: Path) -> sf.SoundFile:
    if not path.is_file():
        raise AudioError(f"{path}: no such file", "check the path")
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})", "convert it to WAV or FLAC") from e


def stream_file(path: Path, target_rate: int, block_s: float = READ_BLOCK_S,
                channel: int | None = None) -> Iterator[AudioChunk]:
    """Decode, downmix and resample a file to ``target_rate``; yields contiguous chunks from sample 0."""
    with _open(path) as handle:
        if handle.frames == 0 and handle.format != "MP3":
            raise AudioError(f"{path}: file holds no audio", "the recording is empty; check the recorder")
        if channel is not None and channel >= handle.channels:
            raise AudioError(f"{path}: channel {channel} requested but the file has {handle.channels}",
                             "choose a channel from 0")
        resampler = StreamResampler(handle.samplerate, target_rate)
        block = max(1, int(block_s * handle.samplerate))
        position = 0
        try:
            while True:
                frames = handle.read(block, dtype="float32", always_2d=True)
                last = frames.shape[0] < block
                out = resampler.push(downmix(frames, channel), last=last)
                if out.shape[0]:
                    yield AudioChunk(out, target_rate, position)
                    position += out.shape[0]
                if last:
                    break
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{path}: decoding failed after {position / target_rate:.1f} s ({e})",
                             "the file may be truncated; re-copy it from the card") from e
    if position == 0:
        raise AudioError(f"{path}: file holds no audio", "the recording is empty; check the recorder")


def read_file(path: Path, target_rate: int, channel: int | None = None) -> np.ndarray:
    """The whole file as one mono float32 array at ``target_rate``."""
    chunks = [c.samples for c in stream_file(path, target_rate, channel=channel)]
    return np.concatenate(chunks)
