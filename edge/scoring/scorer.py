"""Label embeddings from the bundle and per-window label scores (cosine × logit scale).

Scores are per label and do not depend on which other labels are in the list; a softmax across the
list is available as an option (``mode="softmax"``), never the default. A label may also be a trained
linear head (``edge.scoring.heads``): its score is the head's logit ``w·x + b`` instead of cosine × logit scale.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ConfigError, LabelError
from edge.model.bundle import LOCAL_REVISION_PREFIX, Bundle
from edge.scoring.label_sets import check_label_set_model
from edge.scoring.labels import LabelList, read_labels

SCORE_MODES = ("logit", "softmax")
HEAD_SOURCE = "head"
"""``LabelSetEntry.source`` of a trained linear head (weights + bias per label, see ``edge.scoring.heads``)."""


@dataclass(frozen=True)
class LabelSet:
    """Label names and their vectors ``(L, D)`` float32, in the user's order.

    Text/example labels are L2-normalised embeddings; head labels (``bias`` not NaN) are a linear
    head's weights, scored as ``w·x + b``.
    """

    names: tuple[str, ...]
    embeddings: np.ndarray
    bias: np.ndarray | None = None
    """``(L,)`` float32 intercepts of head labels, NaN for text labels; None when no label is a head."""

    @property
    def head_mask(self) -> np.ndarray:
        """``(L,)`` bool: which labels are trained heads."""
        if self.bias is None:
            return np.zeros(len(self.names), dtype=bool)
        return ~np.isnan(self.bias)

    def with_head(self, head: LabelSet) -> LabelSet:
        """This set with a trained head's labels: a head label named like a label here (ignoring case) replaces
        that label's zero-shot score in place (the list's order and names stay); other head labels are appended.
        """
        folded = {n.casefold(): i for i, n in enumerate(self.names)}
        rows = self.embeddings.copy()
        bias = self.bias.copy() if self.bias is not None else np.full(len(self.names), np.nan, np.float32)
        names, extra_rows, extra_bias = list(self.names), [], []
        assert head.bias is not None
        for name, row, b in zip(head.names, head.embeddings, head.bias):
            at = folded.get(name.casefold())
            if at is None:
                names.append(name)
                extra_rows.append(row)
                extra_bias.append(b)
            else:
                rows[at], bias[at] = row, b
        if extra_rows:
            rows = np.concatenate([rows, np.stack(extra_rows)])
            bias = np.concatenate([bias, np.asarray(extra_bias, np.float32)])
        return LabelSet(tuple(names), rows.astype(np.float32), bias.astype(np.float32))


def load_label_set(bundle: Bundle, labels: LabelList, labels_path: str = "labels.txt") -> LabelSet:
    """Embeddings for ``labels``: the set exported from this exact list, else assembled label by label."""
    sets = bundle.manifest.label_sets
    if labels.key in sets:
        stored = sets[labels.key]
        check_label_set_model(bundle, stored)
        data = np.load(bundle.path(stored.path))
        return LabelSet(stored.names, data["embeddings"].astype(np.float32))
    by_name: dict[str, np.ndarray] = {}
    for entry in sets.values():
        if entry.source == HEAD_SOURCE:
            continue  # a head's weights are not an embedding
        check_label_set_model(bundle, entry)
        embeddings = np.load(bundle.path(entry.path))["embeddings"]
        for name, row in zip(entry.names, embeddings):
            by_name.setdefault(name.casefold(), row)
    missing = [n for n in labels.names if n.casefold() not in by_name]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise LabelError(
            f"{len(missing)} label(s) have no embeddings in bundle {bundle.root}: {shown}",
            f"run `{missing_labels_command(bundle, labels_path, missing)}` on the workstation",
        )
    rows = np.stack([by_name[n.casefold()] for n in labels.names]).astype(np.float32)
    return LabelSet(labels.names, rows)


def missing_labels_command(bundle: Bundle, labels_path: str, missing: list[str]) -> str:
    """A command that embeds ``missing``: the list file's export, or, for names the file does not hold (a
    config's background/privacy prompts), one that writes them to a file of their own first."""
    try:
        listed = {name.casefold() for name in read_labels(labels_path).names}
    except LabelError:
        return add_labels_command(bundle, labels_path)
    extra = [name for name in missing if name.casefold() not in listed]
    if not extra:
        return add_labels_command(bundle, labels_path)
    prompts_file = str(Path(labels_path).resolve().parent / "prompts.txt")
    write = shlex.join(["printf", "%s\\n", *extra])
    return f"{write} > {shlex.quote(prompts_file)} && {add_labels_command(bundle, prompts_file)}"


def add_labels_command(bundle: Bundle, labels_path: str) -> str:
    """The complete ``biolingual-export labels`` command for this bundle, with the checkpoint that made it."""
    manifest = bundle.manifest
    words = ["biolingual-export", "labels", "--model", manifest.model_id]
    if not manifest.model_revision.startswith(LOCAL_REVISION_PREFIX) and manifest.model_revision != "unknown":
        words += ["--revision", manifest.model_revision]
    words += ["--labels", str(Path(labels_path).resolve()), "--bundle", str(bundle.root.resolve())]
    return shlex.join(words)


@dataclass(frozen=True)
class Scores:
    """Per-window, per-label scores for a batch: all arrays ``(B, L)`` float32."""

    cosine: np.ndarray
    """Raw cosine similarity between audio and label embeddings, in [-1, 1]."""
    score: np.ndarray
    """``cosine × logit_scale`` (mode ``logit``) or a softmax of that across the list (mode ``softmax``)."""


class Scorer:
    """Audio embeddings -> label scores."""

    def __init__(self, label_set: LabelSet, logit_scale: float, mode: str = "logit") -> None:
        if mode not in SCORE_MODES:
            raise ConfigError(f"unknown score mode '{mode}'", f"use --score-mode {' or '.join(SCORE_MODES)}")
        heads = label_set.head_mask
        if mode == "softmax" and heads.any():
            raise LabelError("a softmax across the list cannot mix trained heads with text labels",
                             "use --score-mode logit with heads")
        self.label_set = label_set
        self.logit_scale = logit_scale
        self.mode = mode
        self._label_matrix = np.ascontiguousarray(label_set.embeddings.T)
        self._has_heads = bool(heads.any())
        if self._has_heads:
            assert label_set.bias is not None
            norms = np.linalg.norm(label_set.embeddings, axis=1).astype(np.float32)
            self._cosine_divisor = np.where(heads, np.maximum(norms, 1e-12), 1.0).astype(np.float32)
            self._scale = np.where(heads, 1.0, logit_scale).astype(np.float32)
            self._offset = np.where(heads, label_set.bias, 0.0).astype(np.float32)

    def score(self, audio_embeddings: np.ndarray) -> Scores:
        """``(B, D)`` L2-normalised embeddings -> :class:`Scores`."""
        return self.from_cosine(audio_embeddings @ self._label_matrix)

    @property
    def label_matrix(self) -> np.ndarray:
        """``(D, L)`` float32: the label vectors as columns (a head's weights are not unit length)."""
        return self._label_matrix

    def from_cosine(self, cosine: np.ndarray) -> Scores:
        """``(B, L)`` products of unit audio embeddings with :attr:`label_matrix` (computed here or elsewhere,
        e.g. over an archive) -> :class:`Scores`; for text labels these products are the cosines."""
        if self._has_heads:
            return Scores(cosine / self._cosine_divisor, cosine * self._scale + self._offset)
        logits = cosine * np.float32(self.logit_scale)
        if self.mode == "softmax":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return Scores(cosine, shifted / shifted.sum(axis=1, keepdims=True))
        return Scores(cosine, logits)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first: ``(B, L)`` -> ``(B, min(k, L))``."""
    k = min(k, scores.shape[1])
    if k == 1:  # the usual top-1: one pass, the first of equal bests
        return scores.argmax(axis=1)[:, None]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)
