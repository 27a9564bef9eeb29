"""Inference backends behind one contract, ``embed(features) -> embeddings``, chosen in one place."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.errors import BackendError
from edge.model.bundle import Bundle

BACKEND_NAMES = ("ort", "trt")


class Backend(Protocol):
    """Audio encoder: ``(B, 1, n_frames, n_mels)`` float32 log-mel -> ``(B, D)`` float32 L2-normalised."""

    name: str
    precision: str

    def embed(self, features: np.ndarray) -> np.ndarray: ...


def create_backend(bundle: Bundle, backend: str = "ort", precision: str = "fp32",
                   threads: int | None = None, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                   optimized: bool = True, low_memory: bool = False) -> Backend:
    """The single place a backend is chosen; an unavailable one is an error, never a silent fallback."""
    if backend == "ort":
        from edge.model.backends.ort import OrtBackend

        return OrtBackend(bundle, precision=precision, threads=threads, providers=providers, optimized=optimized,
                          low_memory=low_memory)
    if backend == "trt":
        from edge.model.backends.trt import TrtBackend

        return TrtBackend(bundle, precision=precision)
    raise BackendError(f"unknown backend '{backend}'", f"choose one of: {', '.join(BACKEND_NAMES)}")
