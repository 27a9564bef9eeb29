"""Fidelity of a reduced-precision encoder against fp32: errors, (centred) cosine, label-ranking agreement.

On random or barely trained weights every embedding points almost the same way, so the raw cosine is
≈ 1 whatever the damage. The centred cosine subtracts the reference's mean embedding over the set from
both sides first, measuring agreement on what actually distinguishes the windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.model.bundle import Bundle

TOP_K = 5


@dataclass(frozen=True)
class Gates:
    """Minimum agreement a precision must reach against ORT fp32 on held-out real recordings."""

    min_centred_cosine: float
    """Mean over windows of the centred cosine."""
    min_top1: float
    """Fraction of windows whose best label is the same."""


PRECISION_GATES = {
    "fp16": Gates(min_centred_cosine=0.999, min_top1=0.995),
    "int8": Gates(min_centred_cosine=0.99, min_top1=0.99),
}


def gates_for(precision: str) -> Gates:
    """Gates of a precision; engine and runtime variants (``int8-trt``, ``trt-fp16``) share their base's."""
    base = "int8" if "int8" in precision else "fp16" if "fp16" in precision else precision
    if base not in PRECISION_GATES:
        return Gates(min_centred_cosine=0.99999, min_top1=1.0)
    return PRECISION_GATES[base]


@dataclass(frozen=True)
class Fidelity:
    """Agreement of ``(N, D)`` candidate embeddings with reference embeddings of the same windows."""

    windows: int
    max_abs: float
    min_cosine: float
    mean_cosine: float
    min_centred_cosine: float
    mean_centred_cosine: float
    labels: int
    """Number of labels the rankings were compared on (0: no label set in the bundle)."""
    top1_agreement: float | None
    """Fraction of windows whose top label agrees, a reference near-tie (:data:`TOP1_TIE_FRACTION`) counting
    as agreement; ``None`` without labels. This is what the gates use."""
    top1_exact: float | None
    """Fraction of windows whose top label is identical, ties or not."""
    top5_overlap: float | None
    """Mean fraction of the reference's top-5 labels that are also in the candidate's top-5."""

    def passes(self, gates: Gates) -> bool:
        return (self.mean_centred_cosine >= gates.min_centred_cosine and self.top1_agreement is not None
                and self.top1_agreement >= gates.min_top1)


TOP1_TIE_FRACTION = 0.005
"""A label whose reference score is within this fraction of the window's score range (best - worst label)
of the best one ties with it: the reference itself barely ranks them, so a reduced-precision model choosing
either agrees. Without it, one near-tie among a few dozen test windows (seen: a 0.0018 cosine gap in a 0.64
range) decides a 99 % gate by rounding noise."""


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, np.finfo(np.float64).tiny)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def ranking_agreement(ref_scores: np.ndarray, cand_scores: np.ndarray) -> tuple[float, float, float]:
    """(tie-aware top-1, exact top-1, top-5 overlap) of two ``(N, L)`` score matrices over the same labels."""
    k = min(TOP_K, ref_scores.shape[1])
    ref_top, cand_top = _top_k(ref_scores, k), _top_k(cand_scores, k)
    rows = np.arange(ref_scores.shape[0])
    gap = ref_scores[rows, ref_top[:, 0]] - ref_scores[rows, cand_top[:, 0]]
    spread = ref_scores.max(axis=1) - ref_scores.min(axis=1)
    top1 = float((gap <= TOP1_TIE_FRACTION * spread).mean())
    top1_exact = float((ref_top[:, 0] == cand_top[:, 0]).mean())
    top5 = float(np.mean([len(set(r) & set(c)) / k for r, c in zip(ref_top, cand_top)]))
    return top1, top1_exact, top5


def fidelity(reference: np.ndarray, candidate: np.ndarray, label_embeddings: np.ndarray | None) -> Fidelity:
    """Compare embeddings row by row; label rankings from ``(L, D)`` label embeddings when given."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    cosine = _row_cosine(ref, cand)
    mean = ref.mean(axis=0, keepdims=True)
    centred = _row_cosine(ref - mean, cand - mean)
    top1 = top1_exact = top5 = None
    n_labels = 0
    if label_embeddings is not None and label_embeddings.shape[0] > 0:
        labels = label_embeddings.astype(np.float64).T
        n_labels = int(labels.shape[1])
        top1, top1_exact, top5 = ranking_agreement(ref @ labels, cand @ labels)
    return Fidelity(windows=int(ref.shape[0]), max_abs=float(np.abs(ref - cand).max()),
                    min_cosine=float(cosine.min()), mean_cosine=float(cosine.mean()),
                    min_centred_cosine=float(centred.min()), mean_centred_cosine=float(centred.mean()),
                    labels=n_labels, top1_agreement=top1, top1_exact=top1_exact, top5_overlap=top5)


def bundle_label_embeddings(bundle: Bundle) -> np.ndarray | None:
    """All distinct labels (by case-folded name) of the bundle's label sets as one ``(L, D)`` array."""
    seen: dict[str, np.ndarray] = {}
    for entry in bundle.manifest.label_sets.values():
        with np.load(bundle.root / entry.path) as data:
            for name, row in zip(entry.names, data["embeddings"]):
                seen.setdefault(name.casefold(), row)
    return np.stack(list(seen.values())).astype(np.float32) if seen else None
