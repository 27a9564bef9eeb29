"""The log-mel frontend against a plain numpy formula, without torch: runs under the numpy floor (1.x) too,
where ``np.fft.rfft`` has no ``out=``."""

from __future__ import annotations

import numpy as np

from edge.model.bundle import FrontendParams
from edge.model.frontend import POWER_FLOOR, LogMelFrontend, slaney_mel_filters

PARAMS = FrontendParams(48_000, 1024, 480, 64, 50.0, 14_000.0, 10)


def reference_log_mel(samples: np.ndarray) -> np.ndarray:
    """Reflect-padded Hann STFT power -> Slaney mel -> dB, written out the obvious way (float64)."""
    n, half = PARAMS.n_fft, PARAMS.n_fft // 2
    padded = np.pad(samples.astype(np.float64), half, mode="reflect")
    starts = range(0, padded.shape[0] - n + 1, PARAMS.hop_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frames = np.stack([padded[s : s + n] * window for s in starts])
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return 10 * np.log10(np.maximum(power @ slaney_mel_filters(PARAMS), POWER_FLOOR))


def test_frontend_matches_the_plain_formula() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(PARAMS.window_samples) / PARAMS.sampling_rate
    samples = (0.1 * np.sin(2 * np.pi * 3_000 * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    ours = LogMelFrontend(PARAMS)(samples)
    expected = reference_log_mel(samples)
    assert ours.shape == expected.shape == (PARAMS.n_frames, PARAMS.n_mels)
    np.testing.assert_allclose(ours, expected, atol=1e-3)


def test_a_window_needs_a_few_megabytes_of_scratch_not_one_buffer_per_frame() -> None:
    """A unit's peak RSS counts the frontend: a 10 s window's 1001 frames in float64 would be ~24 MB of
    scratch; frames go through it in chunks, with the same result as the plain formula."""
    import tracemalloc

    samples = np.random.default_rng(1).standard_normal(PARAMS.window_samples).astype(np.float32)
    tracemalloc.start()
    try:
        ours = LogMelFrontend(PARAMS)(samples)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MB traced while computing one window"
    np.testing.assert_allclose(ours, reference_log_mel(samples), atol=1e-3)
