"""Audio embeddings of example recordings: every window of each file, through the bundle's fp32 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.audio.files import read_file
from edge.audio.windowing import clip_windows
from edge.model.backends.ort import OrtBackend
from edge.model.bundle import Bundle
from edge.model.frontend import LogMelFrontend

EMBED_BATCH = 8


def embed_recordings(bundle: Bundle, files: list[Path]) -> np.ndarray:
    """``(N, D)`` L2-normalised embeddings of the non-overlapping windows of ``files`` (tail window included)."""
    params = bundle.manifest.frontend
    frontend = LogMelFrontend(params)
    backend = OrtBackend(bundle, "fp32")
    windows = [w.samples for path in files
               for w in clip_windows(read_file(path, params.sampling_rate), params.window_samples,
                                     params.window_samples)]
    if not windows:
        return np.empty((0, bundle.manifest.embedding_dim), dtype=np.float32)
    rows = [backend.embed(frontend.batch(windows[i:i + EMBED_BATCH])) for i in range(0, len(windows), EMBED_BATCH)]
    embeddings = np.concatenate(rows)
    return (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
