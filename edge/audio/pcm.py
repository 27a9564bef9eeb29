"""Blocks of an open sound file as float32: the values libsndfile's own float read gives, cheaper for 16-bit PCM."""

from __future__ import annotations

import numpy as np
import soundfile as sf

INT16_SCALE = np.float32(1.0 / 32768.0)
"""libsndfile's float normalisation of 16-bit PCM (a power of two, so the scaling is exact)."""


def read_float32(handle: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to ``frames`` frames from the handle's position as ``(n, channels)`` float32.

    16-bit PCM (what field recorders write) is read as int16 and scaled here, bit for bit what libsndfile's
    float read returns (int16 -> float32 and the power-of-two scale are both exact) at about a third of its CPU:
    libsndfile converts sample by sample, numpy in SIMD. Every other encoding is libsndfile's float read.
    """
    if handle.subtype != "PCM_16":
        return handle.read(frames, dtype="float32", always_2d=True)
    block = handle.read(frames, dtype="int16", always_2d=True).astype(np.float32)
    block *= INT16_SCALE
    return block
