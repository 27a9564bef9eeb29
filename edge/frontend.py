"""Numpy log-mel frontend, equal (within 0.01 dB) to the checkpoint's ``ClapFeatureExtractor`` (unfused).

Centre-padded (reflect) STFT with a periodic Hann window, power spectrum, Slaney-scale Slaney-normalised
mel filters, ``10·log10(max(mel, 1e-10))``. Clips shorter than a window are tiled then zero-padded
(``repeatpad``); longer ones must be cut by the windower, never cropped at random here.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge.bundle import FrontendParams

POWER_FLOOR = 1e-10
"""Mel power below this is clamped before the log (the reference's ``mel_floor`` and ``min_value``)."""
SLANEY_LINEAR_HZ_PER_MEL = 200.0 / 3.0
SLANEY_LOG_START_HZ = 1000.0
SLANEY_LOG_START_MEL = SLANEY_LOG_START_HZ / SLANEY_LINEAR_HZ_PER_MEL
SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_slaney_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / SLANEY_LINEAR_HZ_PER_MEL
    logarithmic = SLANEY_LOG_START_MEL + np.log(np.maximum(hz, 1e-12) / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP
    return np.where(hz >= SLANEY_LOG_START_HZ, logarithmic, linear)


def slaney_mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_slaney_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * SLANEY_LINEAR_HZ_PER_MEL
    logarithmic = SLANEY_LOG_START_HZ * np.exp(SLANEY_LOG_STEP * (mel - SLANEY_LOG_START_MEL))
    return np.where(mel >= SLANEY_LOG_START_MEL, logarithmic, linear)


def slaney_mel_filters(params: FrontendParams) -> np.ndarray:
    """Triangular mel filters, area-normalised (Slaney), shape ``(n_fft // 2 + 1, n_mels)``, float64."""
    if params.mel_scale != "slaney" or params.mel_norm != "slaney":
        raise ValueError(f"unsupported mel scale/norm {params.mel_scale}/{params.mel_norm}")
    n_bins = params.n_fft // 2 + 1
    edges_mel = np.linspace(hz_to_slaney_mel(params.f_min), hz_to_slaney_mel(params.f_max), params.n_mels + 2)
    edges_hz = slaney_mel_to_hz(edges_mel)
    fft_hz = np.linspace(0, params.sampling_rate // 2, n_bins)
    widths = np.diff(edges_hz)
    slopes = edges_hz[None, :] - fft_hz[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[None, :]


def repeat_pad(samples: np.ndarray, length: int) -> np.ndarray:
    """Tile a short clip as many whole times as fit, then zero-pad to ``length`` (``repeatpad``)."""
    if samples.shape[0] == 0:
        raise ValueError("cannot pad an empty clip")
    tiled = np.tile(samples, length // samples.shape[0])
    return np.pad(tiled, (0, length - tiled.shape[0]))


class LogMelFrontend:
    """Waveform window (48 kHz mono float) -> log-mel ``(n_frames, n_mels)`` float32 in dB."""

    def __init__(self, params: FrontendParams, highpass_hz: float = 0.0) -> None:
        """``highpass_hz`` > 0 zeroes FFT bins below it before the mel filters (a unit's rumble filter)."""
        self.params = params
        n = params.n_fft
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)
        self._filters = slaney_mel_filters(params)
        if highpass_hz > 0:
            bin_hz = np.linspace(0, params.sampling_rate // 2, n // 2 + 1)
            self._filters[bin_hz < highpass_hz, :] = 0.0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Features of one window: ``samples`` (N,) with N <= window_samples -> (n_frames, n_mels) float32."""
        p = self.params
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {samples.shape}")
        if samples.shape[0] > p.window_samples:
            raise ValueError(f"{samples.shape[0]} samples is longer than one {p.window_samples}-sample window")
        if samples.shape[0] < p.window_samples:
            samples = repeat_pad(samples, p.window_samples)
        half = p.n_fft // 2
        padded = np.pad(samples.astype(np.float64, copy=False), (half, half), mode="reflect")
        frames = sliding_window_view(padded, p.n_fft)[:: p.hop_length]
        spectrum = np.fft.rfft(frames * self._window, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = np.maximum(power @ self._filters, POWER_FLOOR)
        return (10.0 * np.log10(mel)).astype(np.float32)

    def batch(self, windows: list[np.ndarray]) -> np.ndarray:
        """Features for several windows, shaped as the model input ``(B, 1, n_frames, n_mels)`` float32."""
        out = np.empty((len(windows), 1, self.params.n_frames, self.params.n_mels), dtype=np.float32)
        for i, samples in enumerate(windows):
            out[i, 0] = self(samples)
        return out
