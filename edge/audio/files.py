"""Audio files (WAV/FLAC/MP3/OGG via soundfile) read as a stream of 48 kHz mono chunks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.audio.chunk import AudioChunk, downmix
from edge.audio.decoder_messages import DecoderMessages
from edge.audio.pcm import read_float32
from edge.audio.resample import StreamResampler
from edge.audio.riff import truncated_data
from edge.errors import AudioError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".aif", ".aiff"})
APPLEDOUBLE_PREFIX = "._"
"""macOS writes ``._NAME.WAV`` metadata twins onto FAT/exFAT cards: not audio, skipped when searching folders."""
READ_BLOCK_S = 2.0
"""Seconds of source audio decoded per read: bounds memory for hour-long files."""


def find_audio_files(paths: list[Path]) -> list[Path]:
    """Files given directly, plus every audio file under given folders (recursive, case-insensitive suffix)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                                and not p.name.startswith(APPLEDOUBLE_PREFIX)))
        else:
            found.append(path)
    return found


def _open(path: Path) -> sf.SoundFile:
    if not path.is_file():
        raise AudioError(f"{path}: no such file", "check the path")
    if _is_text(_head(path)):  # before libsndfile/mpg123, which print their own noise for such files
        raise AudioError(f"{path}: {_why_unreadable(path)}", "convert it to WAV or FLAC, or remove it")
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: {_why_unreadable(path)}", "convert it to WAV or FLAC, or remove it") from e


SNIFF_BYTES = 512
"""Bytes of a file inspected to say what an unreadable 'recording' actually is."""


def _head(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(SNIFF_BYTES)
    except OSError:
        return None


def _is_text(head: bytes | None) -> bool:
    """Every audio container starts with binary header bytes (NULs); text has none and decodes as UTF-8."""
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _why_unreadable(path: Path) -> str:
    """A reason a person can act on; libsndfile's own ('possibly a pipe?') names the wrong problem."""
    head = _head(path)
    if head is None:
        return "cannot be read (permissions?)"
    if not head:
        return "is empty (0 bytes)"
    if _is_text(head):
        return f"is a text file, not audio, despite its {path.suffix or 'missing'} suffix"
    return f"is not audio in a format this tool reads ({', '.join(sorted(s[1:] for s in AUDIO_SUFFIXES))})"


def truncation_warning(path: Path) -> str | None:
    """A one-line warning naming ``path`` when its WAV header promises more audio than the file holds."""
    sizes = truncated_data(path)
    if sizes is None:
        return None
    declared, present = sizes
    return (f"{path} is truncated: its header promises {declared} bytes of audio, the file holds {present} "
            f"({100 * present / declared:.0f}%); analysing what is there (re-copy it from the card)")


ULTRASONIC_FACTOR = 4
"""A recording whose Nyquist frequency is this many times the model's top frequency or more holds mostly sound
the model never hears (a 384 kHz bat recording against a 14 kHz model band): warned about, by name."""


def band_warning(path: Path, model_max_hz: float) -> str | None:
    """A one-line warning naming ``path`` when it was recorded far above the band the model hears."""
    try:
        rate = int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return None  # an unreadable file is reported when it is analysed
    nyquist = rate / 2
    if nyquist < ULTRASONIC_FACTOR * model_max_hz:
        return None
    return (f"{path} was recorded at {rate} Hz: everything from {model_max_hz:.0f} to {nyquist:.0f} Hz (bat "
            f"echolocation, ultrasonic insects) is lost, the model hears only up to {model_max_hz:.0f} Hz; "
            "detections in this file cover audible sound only")


def stream_file(path: Path, target_rate: int, block_s: float = READ_BLOCK_S,
                channel: int | None = None, warn_truncated: bool = True) -> Iterator[AudioChunk]:
    """Decode, downmix and resample a file to ``target_rate``; yields contiguous chunks from sample 0.

    A WAV cut short (a copy interrupted, a card pulled while writing) is read up to where its data ends,
    with a warning naming the file (logged, unless ``warn_truncated`` is False because the caller reports it).
    """
    warning = truncation_warning(path) if warn_truncated else None
    if warning:
        log.warning("%s", warning)
    messages = DecoderMessages(path)
    with messages.held():
        handle = _open(path)
    with handle:
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
                with messages.held():
                    frames = read_float32(handle, block)
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
        finally:
            messages.report()
    if position == 0:
        raise AudioError(f"{path}: file holds no audio", "the recording is empty; check the recorder")


def read_file(path: Path, target_rate: int, channel: int | None = None) -> np.ndarray:
    """The whole file as one mono float32 array at ``target_rate``."""
    chunks = [c.samples for c in stream_file(path, target_rate, channel=channel)]
    return np.concatenate(chunks)
