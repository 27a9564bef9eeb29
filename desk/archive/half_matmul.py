"""Cosines of float16 archive rows against float32 query vectors, without a float16->float32 copy in numpy.

numpy converts float16 one value at a time; ONNX Runtime's Cast uses the CPU's half-precision instructions, and
the same graph returns the row norms, so a scan of a page is one call. The graph is stored here as its 225
serialised bytes (tests/desk/archive/test_archive.py rebuilds it with the ``onnx`` package and compares): importing
``onnx`` to build it took ~0.8 s of every cold ``rescore`` and ``search``. Its threads do not spin while idle (a
spinning pool burns the other core between calls, twice the CPU under load for the same wall time), and it is
called on blocks of rows small enough to stay in the cache. Falls back to numpy where ONNX Runtime is missing.
:func:`dots` and :func:`square_norms` are the two halves of :func:`cosines`, bit for bit, for a search that ranks by
dot products and computes norms only where they can change the answer (:mod:`desk.archive.bounded`).
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
DOT_BLOCKS = 4
""":func:`dots` joins this many of :func:`blocks`' full blocks per call (no norms to keep in the cache beside the
product): same run, 192 k rows, load ~1: 173 against 256 ms of wall per million rows, 306 against 348 ms CPU."""
OUTPUTS = ["y", "n"]
TINY = np.finfo(np.float32).tiny
"""Squared norms are floored here (a zero row has cosine 0, not NaN)."""
DOT_GRAPH = base64.b64decode(
    "CAg6fQoYCgF4EgJ4ZiIEQ2FzdCoJCgJ0bxgBoAECChIKAnhmCgFxEgF5IgZNYXRNdWwSCGhhbGZfZG90WhUKAXgSEAoOCAoSCgoDEgFuCgMSAWRa"
    "FQoBcRIQCg4IARIKCgMSAWQKAxIBa2IVCgF5EhAKDggBEgoKAxIBbgoDEgFrQgQKABAS")
"""ONNX (IR 8, opset 18): :data:`GRAPH` without its norms, ``y`` = Cast(x)·q only (135 bytes; the same test rebuilds
it): the scan that ranks by the dot product (:mod:`desk.archive.bounded`) costs half of one with norms."""
_sessions: dict[bytes, Any] = {}


def blocks(rows: int) -> list[tuple[int, int]]:
    """(first, stop) of each call: :data:`BLOCK_ROWS` rows, the rest joined to the last block, so that no call but
    a page's only one has fewer rows (ONNX Runtime multiplies a few rows along another path, which rounds
    differently: a scan's cosines do not depend on the blocks)."""
    firsts = list(range(0, rows, BLOCK_ROWS)) or [0]
    if len(firsts) > 1 and rows - firsts[-1] < BLOCK_ROWS:
        firsts.pop()
    return list(zip(firsts, [*firsts[1:], rows]))


def _build_session(graph: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _session_of(graph: bytes) -> Any:
    """The session running ``graph`` (built once), None where ONNX Runtime is missing."""
    if graph not in _sessions:
        try:
            _sessions[graph] = _build_session(graph)
        except ImportError:
            _sessions[graph] = None
    return _sessions[graph]


def _check(rows: np.ndarray, queries: np.ndarray) -> None:
    if queries.ndim != 2 or rows.shape[-1] != queries.shape[0]:
        raise WindowShapeError(f"query vectors of shape {queries.shape} do not fit the archive's "
                               f"{rows.shape[-1]}-dimensional windows",
                               "the labels or query were embedded by another model than these windows': use the "
                               "bundle and label set of the model that wrote them")


def joined_blocks(rows: int) -> list[tuple[int, int]]:
    """:func:`blocks` with every :data:`DOT_BLOCKS` full blocks joined into one call, the last block as it is (so
    a row is multiplied in a call of a multiple of :data:`BLOCK_ROWS` rows, or in the very call :func:`cosines`
    makes: the same product, bit for bit, tests/desk/archive/test_archive.py)."""
    cut = blocks(rows)
    full = cut[:-1]
    return [(full[i][0], full[min(i + DOT_BLOCKS, len(full)) - 1][1]) for i in range(0, len(full), DOT_BLOCKS)] \
        + cut[-1:]


def _blockwise(session: Any, names: list[str], rows: np.ndarray, queries: np.ndarray,
               cut: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """``names`` outputs of ``session`` over ``rows`` in :func:`blocks` (or ``cut``), each ``(N, ...)`` float32."""
    feed = {"q": np.ascontiguousarray(queries, np.float32)}
    out = [np.empty((len(rows), queries.shape[1] if name == "y" else 1), np.float32) for name in names]
    for first, stop in blocks(len(rows)) if cut is None else cut:
        feed["x"] = rows[first:stop] if rows.flags.c_contiguous else np.ascontiguousarray(rows[first:stop])
        for into, found in zip(out, session.run(names, feed)):
            into[first:stop] = found
    return out


def cosines(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``rows`` (N, D) float16/float32 (any norm) × ``queries`` (D, K) float32 (unit) -> (N, K) float32 cosines."""
    _check(rows, queries)
    session = _session_of(GRAPH) if rows.dtype == np.float16 else None
    if session is not None:  # the product per block, the division once per call
        return divided(*_blockwise(session, OUTPUTS, rows, queries))
    return divided(dots(rows, queries), square_norms(rows, queries))


def dots(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The numerators of :func:`cosines`, ``(N, K)`` float32, bit for bit (the same product on the same blocks),
    at about half its cost: no norms."""
    _check(rows, queries)
    session = _session_of(DOT_GRAPH) if rows.dtype == np.float16 else None
    if session is not None:
        return _blockwise(session, ["y"], rows, queries, joined_blocks(len(rows)))[0]
    return rows.astype(np.float32) @ queries


def square_norms(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The squared row norms :func:`cosines` divides by, ``(N, 1)`` float32, bit for bit (each row is reduced on
    its own, so a row's norm does not depend on the rows beside it: tests/desk/archive/test_bounded_search.py)."""
    _check(rows, queries)
    session = _session_of(GRAPH) if rows.dtype == np.float16 else None
    if session is not None:
        return _blockwise(session, ["n"], rows, queries)[0]
    full = rows.astype(np.float32)
    return np.einsum("ij,ij->i", full, full)[:, None]


def divided(products: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Cosines from :func:`dots` and :func:`square_norms` (a zero row's cosine is 0); overwrites both."""
    np.sqrt(np.maximum(squares, TINY, out=squares), out=squares)
    return np.divide(products, squares, out=products)
