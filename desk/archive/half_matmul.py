"""Cosines of float16 archive rows against float32 query vectors, without a float16->float32 copy in numpy.

numpy converts float16 one value at a time; ONNX Runtime's Cast uses the CPU's half-precision instructions, and
the same graph returns the row norms, so a scan of a page is one call. The graph is stored here as its 225
serialised bytes (tests/desk/archive/test_archive.py rebuilds it with the ``onnx`` package and compares): importing
``onnx`` to build it took ~0.8 s of every cold ``rescore`` and ``search``. Its threads do not spin while idle (a
spinning pool burns the other core between calls, twice the CPU under load for the same wall time), and it is
called on blocks of rows small enough to stay in the cache. Falls back to numpy where ONNX Runtime is missing.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from desk.archive.windows import WindowShapeError

GRAPH = base64.b64decode(
    "CAg61gEKGAoBeBICeGYiBENhc3QqCQoCdG8YAaABAgoSCgJ4ZgoBcRIBeSIGTWF0TXVsCi8KAnhmCgRheGVzEgFuIg9SZWR1Y2VTdW1TcXVh"
    "cmUqDwoIa2VlcGRpbXMYAaABAhILaGFsZl9tYXRtdWwqDQgBEAc6AQFCBGF4ZXNaFQoBeBIQCg4IChIKCgMSAW4KAxIBZFoVCgFxEhAKDggB"
    "EgoKAxIBZAoDEgFrYhUKAXkSEAoOCAESCgoDEgFuCgMSAWtiFAoBbhIPCg0IARIJCgMSAW4KAggBQgQKABAS")
"""ONNX (IR 8, opset 18): ``x`` (N, D) float16, ``q`` (D, K) float32 -> ``y`` = Cast(x)·q (N, K) and ``n`` =
ReduceSumSquare(Cast(x), axis 1) (N, 1), float32."""
BLOCK_ROWS = 1024
"""Rows per call: their float32 copy (2 MB at D = 512) stays in the CPU's cache between the Cast, the product
and the norms, which halves the CPU time of a scan against one call per page (measured: 0.24 s against 0.45 s per
200 000 rows × 100 queries)."""
OUTPUTS = ["y", "n"]
TINY = np.finfo(np.float32).tiny
"""Squared norms are floored here (a zero row has cosine 0, not NaN)."""
_session: Any = None


def blocks(rows: int) -> list[tuple[int, int]]:
    """(first, stop) of each call: :data:`BLOCK_ROWS` rows, the rest joined to the last block, so that no call but
    a page's only one has fewer rows (ONNX Runtime multiplies a few rows along another path, which rounds
    differently: a scan's cosines do not depend on the blocks)."""
    firsts = list(range(0, rows, BLOCK_ROWS)) or [0]
    if len(firsts) > 1 and rows - firsts[-1] < BLOCK_ROWS:
        firsts.pop()
    return list(zip(firsts, [*firsts[1:], rows]))


def _build_session() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(GRAPH, options, providers=["CPUExecutionProvider"])


def cosines(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``rows`` (N, D) float16/float32 (any norm) × ``queries`` (D, K) float32 (unit) -> (N, K) float32 cosines."""
    global _session
    if queries.ndim != 2 or rows.shape[-1] != queries.shape[0]:
        raise WindowShapeError(f"query vectors of shape {queries.shape} do not fit the archive's "
                               f"{rows.shape[-1]}-dimensional windows",
                               "the labels or query were embedded by another model than these windows': use the "
                               "bundle and label set of the model that wrote them")
    if rows.dtype == np.float16:
        if _session is None:
            try:
                _session = _build_session()
            except ImportError:
                _session = False
        if _session is not False:
            feed = {"q": np.ascontiguousarray(queries, np.float32)}
            out = np.empty((len(rows), queries.shape[1]), np.float32)
            norms = np.empty((len(rows), 1), np.float32)
            for first, stop in blocks(len(rows)):  # the product per block, the division once per call
                feed["x"] = rows[first:stop] if rows.flags.c_contiguous else np.ascontiguousarray(rows[first:stop])
                out[first:stop], norms[first:stop] = _session.run(OUTPUTS, feed)
            np.sqrt(np.maximum(norms, TINY, out=norms), out=norms)
            return np.divide(out, norms, out=out)
    full = rows.astype(np.float32)
    squares = np.einsum("ij,ij->i", full, full)[:, None]
    return (full @ queries) / np.sqrt(np.maximum(squares, TINY))
