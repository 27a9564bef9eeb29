"""ONNX Runtime low-memory mode: one window in flight whatever the batch, same embeddings, one malloc arena."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.model.backends.ort import OrtBackend, limit_malloc_arenas, map_large_allocations, release_freed_memory
from edge.model.bundle import open_bundle


def test_low_memory_runs_one_window_at_a_time_with_the_same_result(tiny_bundle: Path) -> None:
    bundle = open_bundle(tiny_bundle)
    params = bundle.manifest.frontend
    features = np.random.default_rng(0).normal(-40, 20, (4, 1, params.n_frames, params.n_mels)).astype(np.float32)
    batched = OrtBackend(bundle, threads=1).embed(features)
    low = OrtBackend(bundle, threads=1, low_memory=True)
    calls: list[int] = []
    run = low._run
    low._run = lambda f: (calls.append(f.shape[0]), run(f))[1]  # type: ignore[method-assign]
    np.testing.assert_allclose(low.embed(features), batched, atol=1e-6)
    assert calls == [1, 1, 1, 1]


def test_malloc_arenas_are_limited_on_glibc() -> None:
    assert limit_malloc_arenas()


def test_large_allocations_get_their_own_pages_on_glibc() -> None:
    assert map_large_allocations()
    assert release_freed_memory() in (True, False)  # glibc answers whether it returned anything
