"""The exact top ``k`` of one query, ranked by dot products: a norm only for the rows that can still enter it.

A window's cosine is ``dot(q, r) / |r|``. Each shard records the smallest and largest norm of its non-zero rows
(:func:`desk.archive.shardfile.norm_bounds`), so from its dot product alone a row's cosine lies in
``[dot / n_max, dot / n_min]`` (the other way round for a negative dot). :class:`BoundedTop` takes the dot products
of a scan (:func:`desk.archive.half_matmul.dots`, about half the cost of cosines), keeps the ``k`` largest lower
bounds so far and holds only the rows whose upper bound still reaches the ``k``-th of them (less a rounding slack,
:func:`cosine_error`). The held rows then get their norms (:func:`~desk.archive.half_matmul.square_norms`): their
cosines are bit for bit a full scan's (the same dot products, the same norms, the same division), and the top
``k`` is the full scan's, ties broken by id as :func:`~desk.archive.windows.top_of` breaks them.

Units write unit-length rows, so a shard's bounds lie within float16 rounding of 1 and a scan holds a handful of
rows; a shard of wild norms (or zero rows) only holds more, never answers differently. A shard without recorded
bounds (an archive collected before they were written) is scored the old way, every row's cosine.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from desk.archive.half_matmul import cosines, divided, dots, square_norms
from desk.archive.windows import Scored, top_of

Bounds = tuple[float, float] | None
"""A shard's (smallest, largest) non-zero row norm; None where it records none."""

UNIT_ROUNDOFF = 2.0**-24
"""Of float32 (round to nearest)."""
HOLD_ROWS = 8192
"""Held rows are given their norms and folded into the top once this many wait (~8 MB at D = 512): memory stays
bounded whatever the norms."""


def cosine_error(dim: int, query_norm: float) -> float:
    """A bound on ``|c - dot / |r||`` for any row ``r`` of ``dim`` float16 values, where ``c`` is the float32 cosine
    a full scan computes from the float32 ``dot`` and float32 squared norm (:func:`~desk.archive.half_matmul.cosines`).

    The squared norm is a float32 sum of ``dim`` exact squares (float16 values are exact in float32 and cannot
    under- or overflow there), so it is ``|r|² (1 + θ)`` with ``|θ| ≤ γ = dim·u / (1 - dim·u)`` (the classic dot
    product bound, any summation order); its square root and the division round once each. Hence
    ``c = (dot / |r|)(1 + η)`` with ``|η| ≤ (1 + u) / ((1 - u) √(1 - γ)) - 1`` (≈ γ/2, 1.5e-5 at ``dim`` 512), and
    ``|dot / |r|| ≤ (1 + γ) |q|`` bounds the absolute error. The dot product's own rounding needs no slack: the
    held rows' cosines are computed from the very same float32 dot.
    """
    gamma = dim * UNIT_ROUNDOFF / (1 - dim * UNIT_ROUNDOFF)
    eta = (1 + UNIT_ROUNDOFF) / ((1 - UNIT_ROUNDOFF) * math.sqrt(1 - gamma)) - 1
    return eta * (1 + gamma) * query_norm * (1 + 1e-9)  # 1e-9: this float64 arithmetic's own rounding, and more


def lower_bounds(products: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """The least cosine each float64 dot product allows when the row's norm lies in ``bounds`` (a zero product: 0,
    not a number: none)."""
    low, high = bounds
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(products > 0, products / high,
                        np.where(products < 0, products / low, np.where(products == 0, 0.0, -math.inf)))


def reaching(products: np.ndarray, bounds: tuple[float, float], cut: float) -> np.ndarray:
    """Positions of the dot products whose upper cosine bound (``dot / n_min``, negative: ``dot / n_max``) is at
    least ``cut``: a comparison of the products themselves, no division (every row while there is no floor yet)."""
    if cut == -math.inf:
        return np.arange(len(products))
    return np.flatnonzero(products >= cut * (bounds[0] if cut >= 0 else bounds[1]))


class BoundedTop:
    """The running exact top ``k`` of unit ``query`` ``(D, 1)`` float32 over scanned pieces of the archive."""

    def __init__(self, query: np.ndarray, k: int) -> None:
        self.query, self.k = query, k
        self.slack = 2 * cosine_error(query.shape[0], float(np.linalg.norm(query.astype(np.float64))))
        """A held row's cosine and the floor are each off by at most half of this (:func:`cosine_error`)."""
        self._lows = np.zeros(0, np.float64)
        self._best = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        self._held: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]] = []
        self._waiting = 0

    @property
    def floor(self) -> float:
        """At least ``k`` distinct rows have a cosine above this, less half the slack: the ``k``-th largest lower
        bound of the dot products so far, or the ``k``-th best cosine computed so far if higher."""
        bounded = float(self._lows.min()) if len(self._lows) >= self.k else -math.inf
        scored = float(self._best[1][-1]) if len(self._best[1]) >= self.k else -math.inf
        return max(bounded, scored)

    def add(self, ids: np.ndarray, rows: np.ndarray, bounds: Bounds) -> None:
        """Rank ``rows`` ``(n, D)`` float16 (ids ascending) whose norms lie in ``bounds`` (None: unknown, so
        every row gets its cosine, as a full scan does)."""
        if bounds is None:
            found = cosines(rows, self.query)
            self._fold(ids, found)
            return
        products = dots(rows, self.query)[:, 0]
        top = products if len(products) <= self.k else products[np.argpartition(products, -self.k)[-self.k:]]
        self._raise(lower_bounds(top.astype(np.float64), bounds))
        keep = reaching(products, bounds, self.floor - self.slack)
        if len(keep):
            self._held.append((ids[keep], products[keep], rows[keep], bounds))
            self._waiting += len(keep)
            if self._waiting >= HOLD_ROWS:
                self._score_held()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines) of the top ``k``, best first, ties by ascending id: what a full scan returns."""
        self._score_held()
        return self._best

    def _raise(self, lows: np.ndarray) -> None:
        """Keep the ``k`` largest lower bounds (each of another row: a held row's cosine is never added here)."""
        merged = np.concatenate([self._lows, lows])
        self._lows = merged if len(merged) <= self.k else np.partition(merged, -self.k)[-self.k:]

    def _score_held(self) -> None:
        """Norms and cosines for the held rows that can still enter the top (the floor may have risen since)."""
        cut = self.floor - self.slack
        kept = [(ids[i], products[i], rows[i]) for ids, products, rows, bounds in self._held
                if len(i := reaching(products, bounds, cut))]
        self._held, self._waiting = [], 0
        if not kept:
            return
        ids, products, rows = (np.concatenate(part) for part in zip(*kept))
        found = divided(products[:, None].copy(), square_norms(rows, self.query))
        self._fold(ids, found)

    def _fold(self, ids: np.ndarray, found: np.ndarray) -> None:
        best_ids, best_scores = self._best
        self._best = top_of([Scored(best_ids, best_scores[:, None]), Scored(ids, found)], self.k)


def bounded_top(pieces: Iterator[tuple[np.ndarray, np.ndarray, Bounds]], query: np.ndarray, k: int,
                step: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cosines) of the ``k`` rows of ``pieces`` (ids ascending, ``(n, D)`` float16 rows, their shard's bounds)
    nearest unit ``query`` ``(D,)``: :func:`top_of` of their cosines in ``step``-row calls, bit for bit (each piece
    is cut as a full scan cuts it, so the products are the same)."""
    ranked = BoundedTop(np.ravel(query).astype(np.float32).reshape(-1, 1), k)
    for ids, rows, bounds in pieces:
        for first in range(0, len(ids), step):
            ranked.add(ids[first : first + step], rows[first : first + step], bounds)
    return ranked.result()
