"""``biolingual-export labels``: label embeddings (text prompts or example recordings) into the bundle."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from edge.audio.files import find_audio_files
from edge.model.bundle import Bundle
from edge.model.examples import embed_recordings
from edge.scoring.label_sets import DEFAULT_TEMPLATE, MAX_TOKENS, normalise, store_label_set, template_embeddings
from edge.scoring.labels import LabelList
from export.checkpoint import Checkpoint, projected
from export.errors import ExportError

__all__ = ["DEFAULT_TEMPLATE", "TorchTextEmbedder", "check_same_model", "example_embeddings", "store_label_set",
           "text_embeddings"]


class TorchTextEmbedder:
    """The checkpoint's transformers tokenizer + ``get_text_features`` (the reference route, needs torch)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint

    def embed(self, texts: list[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` float32, L2-normalised (one padded batch)."""
        import torch

        tokens = self.checkpoint.processor.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS,
                                                     return_tensors="pt")
        with torch.no_grad():
            out = self.checkpoint.model.get_text_features(input_ids=tokens["input_ids"],
                                                          attention_mask=tokens["attention_mask"])
        return normalise(projected(out).numpy())

    def token_counts(self, texts: list[str]) -> list[int]:
        """Untruncated token count of each text (special tokens included)."""
        return [len(ids) for ids in self.checkpoint.processor.tokenizer(texts, truncation=False)["input_ids"]]


def text_embeddings(checkpoint: Checkpoint, labels: LabelList, templates: tuple[str, ...]) -> np.ndarray:
    """Mean over templates of the normalised text embeddings through torch, renormalised: ``(L, D)`` float32."""
    return template_embeddings(TorchTextEmbedder(checkpoint), labels, templates)


def example_embeddings(bundle: Bundle, labels: LabelList, examples_dir: Path) -> np.ndarray:
    """Per label, the mean normalised audio embedding of every window of ``examples_dir/<label>/*``."""
    rows = []
    for name in labels.names:
        folder = examples_dir / name
        files = find_audio_files([folder]) if folder.is_dir() else []
        if not files:
            raise ExportError(f"no example recordings for label '{name}' in {folder}",
                              f"put WAV/FLAC files of '{name}' in {folder}/")
        rows.append(embed_recordings(bundle, files).mean(axis=0))
    return normalise(np.stack(rows))


def check_same_model(bundle: Bundle, checkpoint: Checkpoint) -> None:
    """Text embeddings only make sense from the checkpoint whose audio tower is in the bundle.

    Compared by content (the weights' hash for a local folder, the commit for a hub model), not by the
    path string: the same checkpoint given by an absolute path or from another folder is the same model.
    """
    m = bundle.manifest
    known = "unknown" not in (m.model_revision, checkpoint.revision)
    same = m.model_revision == checkpoint.revision if known else m.model_id == checkpoint.model_id
    if not same:
        raise ExportError(
            f"bundle was exported from {m.model_id}@{m.model_revision}, labels asked from "
            f"{checkpoint.model_id}@{checkpoint.revision}",
            f"pass the checkpoint that made the bundle: --model {shlex.quote(m.model_id)}",
        )
