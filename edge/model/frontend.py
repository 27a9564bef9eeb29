"""Numpy log-mel frontend, equal (within 0.01 dB) to the checkpoint's ``ClapFeatureExtractor`` (unfused).

Centre-padded (reflect) STFT with a periodic Hann window, power spectrum, Slaney-scale Slaney-normalised
mel filters, ``10·log10(max(mel, 1e-10))``. Clips shorter than a window are tiled then zero-padded
(``repeatpad``); longer ones must be cut by the windower, never cropped at random here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge.model.bundle import FrontendParams

RFFT_TAKES_OUT = int(np.__version__.split(".")[0]) >= 2
"""``np.fft.rfft(..., out=)`` exists from numpy 2.0; numpy 1.x (still pinned by Jetson wheels) lacks it."""
POWER_FLOOR = 1e-10
"""Mel power below this is clamped before the log (the reference's ``mel_floor`` and ``min_value``)."""
CHUNK_FRAMES = 128
"""STFT frames per pass through the scratch buffers: ~3 MB of float64 scratch instead of ~24 MB for a whole
10 s window (1001 frames), the same numbers bit for bit (every frame is computed on its own)."""
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


@dataclass(frozen=True)
class FilterGroup:
    """Mel filters with pairwise disjoint supports, applied as one weighting plus a segmented sum."""

    filters: np.ndarray
    """Indices of the filters in the group, ascending (int)."""
    starts: np.ndarray
    """First bin of each filter's support; a filter's sum runs to the next one's start (int)."""
    weights: np.ndarray
    """Per-bin weight of the group filter that covers the bin, 0 elsewhere ``(n_bins,)`` float32."""


def sparse_filter_groups(filters: np.ndarray) -> tuple[FilterGroup, ...]:
    """Split ``(n_bins, n_mels)`` triangular filters into the even and odd ones (each set is disjoint).

    Filter ``m`` spans mel edges ``m .. m+2``, so filters two apart never share a bin. Summing a bin
    range per filter replaces a dense matmul whose BLAS threads stall on a busy 2-core machine.
    Filters that cover no bin are left out of every group (their mel power stays 0, i.e. the floor).
    """
    groups = []
    for parity in (0, 1):
        members = [m for m in range(parity, filters.shape[1], 2) if filters[:, m].any()]
        weights = np.zeros(filters.shape[0], dtype=np.float32)
        starts = []
        for m in members:
            support = np.flatnonzero(filters[:, m])
            if weights[support].any():
                raise ValueError("mel filters two apart overlap; these are not triangular mel filters")
            weights[support] = filters[support, m]
            starts.append(int(support[0]))
        groups.append(FilterGroup(np.array(members, dtype=np.intp), np.array(starts, dtype=np.intp), weights))
    return tuple(groups)


class LogMelFrontend:
    """Waveform window (48 kHz mono float) -> log-mel ``(n_frames, n_mels)`` float32 in dB.

    Window, sparse mel filters (cut to the bins any filter touches) and every scratch buffer are built once;
    a call allocates only its result. The FFT runs in float64 because numpy's pocketfft is faster in
    float64 than in float32 on the machines we measured (BENCHMARKS.md); power and mel are float32. Frames
    go through the scratch buffers :data:`CHUNK_FRAMES` at a time (a unit's peak RSS counts them).
    """

    def __init__(self, params: FrontendParams, highpass_hz: float = 0.0) -> None:
        """``highpass_hz`` > 0 zeroes FFT bins below it before the mel filters (a unit's rumble filter)."""
        self.params = params
        n = params.n_fft
        self.half = n // 2
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)
        filters = slaney_mel_filters(params)
        if highpass_hz > 0:
            bin_hz = np.linspace(0, params.sampling_rate // 2, n // 2 + 1)
            filters[bin_hz < highpass_hz, :] = 0.0
        used = np.flatnonzero(filters.any(axis=1))
        self._bins = slice(int(used[0]), int(used[-1]) + 1)
        self._groups = sparse_filter_groups(filters[self._bins])
        n_frames, n_band = min(params.n_frames, CHUNK_FRAMES), self._bins.stop - self._bins.start
        self._padded = np.empty(params.window_samples + 2 * self.half, dtype=np.float32)
        self._frames = np.empty((n_frames, n), dtype=np.float64)
        self._spectrum = np.empty((n_frames, n // 2 + 1), dtype=np.complex128)
        self._squares = np.empty((n_frames, n_band, 2), dtype=np.float64)
        self._power = np.empty((n_frames, n_band), dtype=np.float32)
        self._weighted = np.empty((n_frames, n_band), dtype=np.float32)

    def __call__(self, samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Features of one window: ``samples`` (N,) with N <= window_samples -> (n_frames, n_mels) float32."""
        p = self.params
        if out is None:
            out = np.empty((p.n_frames, p.n_mels), dtype=np.float32)
        self.log_mel_frames(self.padded_frames(samples), out)
        return out

    def padded_frames(self, samples: np.ndarray) -> np.ndarray:
        """All STFT frames of a window, reflect-padded by ``n_fft // 2`` at both ends: ``(n_frames, n_fft)``.

        A strided view into a buffer reused by the next call.
        """
        p = self.params
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {samples.shape}")
        if samples.shape[0] > p.window_samples:
            raise ValueError(f"{samples.shape[0]} samples is longer than one {p.window_samples}-sample window")
        if samples.shape[0] < p.window_samples:
            samples = repeat_pad(samples, p.window_samples)
        half, n = self.half, samples.shape[0]
        padded = self._padded
        padded[half : half + n] = samples
        padded[:half] = samples[half:0:-1]
        padded[half + n :] = samples[n - 2 : n - half - 2 : -1]
        return sliding_window_view(padded, p.n_fft)[:: p.hop_length]

    def log_mel_frames(self, frames: np.ndarray, out: np.ndarray) -> None:
        """Log-mel of ``frames`` ``(k, n_fft)`` (any float dtype, strided view allowed) into ``out`` ``(k, n_mels)``."""
        for start in range(0, frames.shape[0], CHUNK_FRAMES):
            self._log_mel_chunk(frames[start : start + CHUNK_FRAMES], out[start : start + CHUNK_FRAMES])

    def _log_mel_chunk(self, frames: np.ndarray, out: np.ndarray) -> None:
        k = frames.shape[0]
        windowed = self._frames[:k]
        np.multiply(frames, self._window, out=windowed)
        spectrum = self._spectrum[:k]
        if RFFT_TAKES_OUT:
            np.fft.rfft(windowed, axis=-1, out=spectrum)
        else:  # numpy 1.x (Jetson wheels): one temporary per call
            spectrum[:] = np.fft.rfft(windowed, axis=-1)
        # (k, bins, 2) float64 view of re/im pairs: squaring and adding the pair is one pass each
        pairs = spectrum.view(np.float64).reshape(k, -1, 2)[:, self._bins]
        squares, power, weighted = self._squares[:k], self._power[:k], self._weighted[:k]
        np.square(pairs, out=squares)
        np.add(squares[..., 0], squares[..., 1], out=power, casting="same_kind")
        out[:] = 0.0
        for group in self._groups:
            np.multiply(power, group.weights, out=weighted)
            out[:, group.filters] = np.add.reduceat(weighted, group.starts, axis=1)
        np.maximum(out, POWER_FLOOR, out=out)
        np.log10(out, out=out)
        out *= 10.0

    def batch(self, windows: list[np.ndarray]) -> np.ndarray:
        """Features for several windows, shaped as the model input ``(B, 1, n_frames, n_mels)`` float32."""
        out = np.empty((len(windows), 1, self.params.n_frames, self.params.n_mels), dtype=np.float32)
        for i, samples in enumerate(windows):
            self(samples, out[i, 0])
        return out
