"""Audio snippets for pages at the desk: a window cut from a recording on disk, as Opus and spectrogram data URIs.

The audio is kept at the model's own rate (48 kHz) and full band, so the reviewer hears everything the model
heard (up to its 14 kHz): Ogg Opus at about 19 kbit/s keeps a 10 s window, spectrogram included, well under
:data:`SNIPPET_BUDGET_BYTES` (about 24 KB of audio; MP3 cannot go below 32 kbit/s at a rate that holds 14 kHz),
so a 1 000-window review is ~40 MB, not the 900 MB of inlined 48 kHz WAV. Browsers: Chrome/Edge, Firefox,
Safari 18.4+.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SNIPPET_RATE = 48_000
"""Sample rate of embedded snippets (Hz): Opus's own rate, and the model's."""
OPUS_COMPRESSION = 0.95
"""libsndfile's Opus setting, 0 (best) .. 1 (smallest): ~19 kbit/s mono, the lowest that libopus still encodes
full band (a 13 kHz tone survives; at 0.97 it switches to 12 kHz super-wideband and the top of the band is lost)."""
SNIPPET_BUDGET_BYTES = 64 * 1024
"""Audio + spectrogram of one window at most (decoded bytes)."""
SPECTROGRAM_FFT = 1024
SPECTROGRAM_HOP = 1200
"""25 ms at 48 kHz: 400 columns for a 10 s window."""
SPECTROGRAM_BIN_POOL = 4
"""Neighbouring frequency bins averaged: 128 rows of 187.5 Hz (0-24 kHz)."""
SPECTROGRAM_RANGE_DB = 80.0
JPEG_QUALITY = 50


@dataclass(frozen=True)
class Snippet:
    """A window's audio as data URIs for an ``<audio>`` and an ``<img>`` element."""

    audio_uri: str
    spectrogram_uri: str

    @property
    def bytes(self) -> int:
        """Decoded size of both (what :data:`SNIPPET_BUDGET_BYTES` bounds)."""
        return sum(len(base64.b64decode(uri.split(",", 1)[1])) for uri in (self.audio_uri, self.spectrogram_uri))


def cut_recording(path: Path, start_s: float, length_s: float, rate: int = SNIPPET_RATE) -> np.ndarray | None:
    """Mono float32 audio of ``[start_s, start_s + length_s)`` of a file at ``rate``; None if it cannot be read."""
    import soxr

    try:
        with sf.SoundFile(path) as handle:
            handle.seek(min(int(start_s * handle.samplerate), handle.frames))
            frames = handle.read(int(length_s * handle.samplerate), dtype="float32", always_2d=True)
            native = handle.samplerate
    except (OSError, sf.LibsndfileError, RuntimeError):
        return None
    if frames.shape[0] == 0:
        return None
    mono = frames.mean(axis=1)
    return np.asarray(soxr.resample(mono, native, rate), dtype=np.float32) if native != rate else mono


def opus_data_uri(samples: np.ndarray, rate: int = SNIPPET_RATE) -> str:
    """Ogg Opus as a ``data:audio/ogg;base64`` URI."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1, 1), rate, format="OGG", subtype="OPUS", compression_level=OPUS_COMPRESSION)
    return "data:audio/ogg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def spectrogram_data_uri(samples: np.ndarray) -> str:
    """Log-power spectrogram (low frequencies at the bottom) as a ``data:image/jpeg;base64`` URI."""
    from matplotlib import image

    padded = np.pad(samples, (0, max(0, SPECTROGRAM_FFT - samples.size)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, SPECTROGRAM_FFT)[::SPECTROGRAM_HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(SPECTROGRAM_FFT), axis=1)) ** 2
    bins = power.shape[1] // SPECTROGRAM_BIN_POOL * SPECTROGRAM_BIN_POOL
    power = power[:, :bins].reshape(power.shape[0], -1, SPECTROGRAM_BIN_POOL).mean(axis=2)
    db = 10 * np.log10(power + 1e-12)
    db = np.clip(db, db.max() - SPECTROGRAM_RANGE_DB, None)
    buffer = io.BytesIO()
    image.imsave(buffer, db.T, cmap="magma", origin="lower", format="jpeg", pil_kwargs={"quality": JPEG_QUALITY})
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def snippet(path: Path, start_s: float, length_s: float) -> Snippet | None:
    """Audio + spectrogram of a window of a recording on disk, or None when the file is not there."""
    samples = cut_recording(path, start_s, length_s)
    if samples is None:
        return None
    return Snippet(opus_data_uri(samples), spectrogram_data_uri(samples))
