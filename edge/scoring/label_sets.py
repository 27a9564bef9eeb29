"""Text label sets: prompts from templates, the template average, and storing ``labels/<key>.npz`` in a bundle.

One implementation for both routes: ``biolingual-export labels`` (torch on the workstation) and
``biolingual-edge labels add`` (the bundle's ONNX text tower, no torch) pass their own
:class:`TextEmbedder` and get the same key, templates and file.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

import numpy as np

from edge.errors import LabelError
from edge.model.bundle import Bundle, LabelSetEntry, Manifest, write_manifest
from edge.model.space import check_space, recorded_space
from edge.scoring.labels import LabelList

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{common}"
"""The authors' zero-shot setup: the bare common name."""
MAX_TOKENS = 77
"""CLAP's text length: longer prompts are truncated (special tokens included)."""
LABELS_DIR = "labels"
TEXT_SOURCE = "text"
EXAMPLES_SOURCE = "examples"
PROFILE_PROMPTS = ("wind noise", "rain", "human speech")
"""The background and privacy prompts of the shipped hardware profiles (``analysis.background_prompts``,
``privacy_prompts``): every text label export stores them too, so a profile works with any species list."""


class TextEmbedder(Protocol):
    """Anything that turns prompts into the model's shared-space text embeddings."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """``N`` strings -> ``(N, D)`` float32, L2-normalised (``get_text_features`` + normalise)."""
        ...

    def token_counts(self, texts: list[str]) -> list[int]:
        """Untruncated token count of each text, special tokens included."""
        ...


def prompts(labels: LabelList, template: str) -> list[str]:
    """Fill ``{common}`` / ``{scientific}`` (falling back to the common name where none was given)."""
    try:
        return [template.format(common=c, scientific=s or c)
                for c, s in zip(labels.names, labels.scientific_names)]
    except (KeyError, IndexError, ValueError) as e:
        raise LabelError(f"template {template!r} is invalid ({e})",
                         "use only {common} and {scientific} placeholders") from e


def normalise(rows: np.ndarray) -> np.ndarray:
    """L2-normalise each row (float32)."""
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def warn_truncated(texts: list[str], counts: list[int]) -> list[str]:
    """Log one warning per text longer than :data:`MAX_TOKENS` tokens; returns those texts."""
    long = [(t, n) for t, n in zip(texts, counts) if n > MAX_TOKENS]
    for text, count in long:
        log.warning("label prompt '%s' is %d tokens, truncated to %d: its embedding ignores the rest",
                    text, count, MAX_TOKENS)
    return [t for t, _ in long]


def template_embeddings(embedder: TextEmbedder, labels: LabelList, templates: tuple[str, ...]) -> np.ndarray:
    """Mean over templates of the normalised text embeddings, renormalised: ``(L, D)`` float32."""
    if not templates:
        raise LabelError("no prompt template given", f"pass --template, e.g. '{DEFAULT_TEMPLATE}'")
    per_template = []
    for template in templates:
        texts = prompts(labels, template)
        warn_truncated(texts, embedder.token_counts(texts))
        per_template.append(normalise(embedder.embed(texts)))
    return normalise(np.mean(per_template, axis=0))


def store_label_set(bundle: Bundle, labels: LabelList, embeddings: np.ndarray, source: str,
                    templates: tuple[str, ...]) -> Manifest:
    """Write ``labels/<key>.npz`` and register it in the manifest (replacing an older set of the same key).

    The set records the bundle's checkpoint revision: :func:`check_label_set_model` refuses it in a bundle of
    another checkpoint.
    """
    (bundle.root / LABELS_DIR).mkdir(exist_ok=True)
    rel = f"{LABELS_DIR}/{labels.key}.npz"
    np.savez(bundle.root / rel, embeddings=embeddings.astype(np.float32), names=np.array(labels.names))
    entry = LabelSetEntry(key=labels.key, path=rel, names=labels.names, source=source, templates=templates,
                          scientific_names=labels.scientific_names, model_revision=bundle.manifest.model_revision,
                          embedding_space=recorded_space(bundle))
    sets = {**bundle.manifest.label_sets, labels.key: entry}
    return write_manifest(bundle.root, dataclasses.replace(bundle.manifest, label_sets=sets))


def embedded_names(bundle: Bundle) -> set[str]:
    """Case-folded names with a text or example embedding in the bundle (heads' weights are not embeddings)."""
    return {name.casefold() for entry in bundle.manifest.label_sets.values()
            if entry.source in (TEXT_SOURCE, EXAMPLES_SOURCE) for name in entry.names}


def missing_prompts(bundle: Bundle, labels: LabelList, wanted: tuple[str, ...] = PROFILE_PROMPTS) -> LabelList | None:
    """The ``wanted`` prompts neither in ``labels`` nor embedded in the bundle yet, as a list of their own."""
    have = embedded_names(bundle) | {name.casefold() for name in labels.names}
    missing = tuple(p for p in wanted if p.casefold() not in have)
    return LabelList(missing, ("",) * len(missing)) if missing else None


def store_text_labels(bundle: Bundle, labels: LabelList, embedder: TextEmbedder,
                      templates: tuple[str, ...]) -> tuple[Manifest, LabelList | None]:
    """Embed and store ``labels``, then the shipped profiles' prompts the bundle lacks (one set of their own).

    Returns the manifest and the prompts added (None when the bundle had them all).
    """
    manifest = store_label_set(bundle, labels, template_embeddings(embedder, labels, templates), TEXT_SOURCE,
                               templates)
    bundle = dataclasses.replace(bundle, manifest=manifest)
    prompts_list = missing_prompts(bundle, labels)
    if prompts_list is not None:
        manifest = store_label_set(bundle, prompts_list, template_embeddings(embedder, prompts_list, templates),
                                   TEXT_SOURCE, templates)
    return manifest, prompts_list


def check_label_set_model(bundle: Bundle, entry: LabelSetEntry) -> None:
    """Refuse a label set whose embeddings were computed by another checkpoint than the bundle's, or stored in a
    bundle of another embedding space."""
    command = f"biolingual-edge labels add --bundle {bundle.root} --labels LABELS.txt"
    if entry.source != TEXT_SOURCE:
        command = f"biolingual-export labels --bundle {bundle.root} --labels LABELS.txt --examples DIR"
    if entry.model_revision and entry.model_revision != bundle.manifest.model_revision:
        raise LabelError(
            f"label set {entry.path} of bundle {bundle.root} was computed by checkpoint {entry.model_revision}, "
            f"the bundle's model is {bundle.manifest.model_revision}",
            f"recompute it: `{command}`",
        )
    if entry.embedding_space:
        check_space(f"label set {entry.path}", entry.embedding_space, bundle, f"recompute it: `{command}`")
