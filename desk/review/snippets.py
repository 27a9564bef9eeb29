"""Audio snippets for pages at the desk: a window cut from a recording on disk, as WAV and spectrogram data URIs."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SNIPPET_RATE = 16_000
"""Sample rate of embedded snippets (Hz): keeps a 10 s window at ~320 kB of WAV."""
SPECTROGRAM_FFT = 512
SPECTROGRAM_HOP = 160
SPECTROGRAM_RANGE_DB = 80.0


@dataclass(frozen=True)
class Snippet:
    """A window's audio as data URIs for an ``<audio>`` and an ``<img>`` element."""

    audio_uri: str
    spectrogram_uri: str


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


def wav_data_uri(samples: np.ndarray, rate: int = SNIPPET_RATE) -> str:
    """16-bit PCM WAV as a ``data:audio/wav;base64`` URI."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1, 1), rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def spectrogram_data_uri(samples: np.ndarray) -> str:
    """Log-power spectrogram (low frequencies at the bottom) as a ``data:image/png;base64`` URI."""
    import matplotlib.image

    padded = np.pad(samples, (0, max(0, SPECTROGRAM_FFT - samples.size)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, SPECTROGRAM_FFT)[::SPECTROGRAM_HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(SPECTROGRAM_FFT), axis=1)) ** 2
    db = 10 * np.log10(power + 1e-12)
    db = np.clip(db, db.max() - SPECTROGRAM_RANGE_DB, None)
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, db.T, cmap="magma", origin="lower", format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def snippet(path: Path, start_s: float, length_s: float) -> Snippet | None:
    """Audio + spectrogram of a window of a recording on disk, or None when the file is not there."""
    samples = cut_recording(path, start_s, length_s)
    if samples is None:
        return None
    return Snippet(wav_data_uri(samples), spectrogram_data_uri(samples))
