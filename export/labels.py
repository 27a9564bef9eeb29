"""``biolingual-export labels``: label embeddings (text prompts or example recordings) into the bundle."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import numpy as np

from edge.audio.files import find_audio_files, read_file
from edge.backends.ort import OrtBackend
from edge.bundle import Bundle, LabelSetEntry, Manifest, write_manifest
from edge.frontend import LogMelFrontend
from edge.labels import LabelList
from edge.windowing import clip_windows
from export.checkpoint import Checkpoint, projected
from export.errors import ExportError

DEFAULT_TEMPLATE = "{common}"
"""The authors' zero-shot setup: the bare common name."""
MAX_TOKENS = 77
LABELS_DIR = "labels"


def prompts(labels: LabelList, template: str) -> list[str]:
    """Fill ``{common}`` / ``{scientific}`` (falling back to the common name where none was given)."""
    try:
        return [template.format(common=c, scientific=s or c)
                for c, s in zip(labels.names, labels.scientific_names)]
    except (KeyError, IndexError, ValueError) as e:
        raise ExportError(f"template {template!r} is invalid ({e})",
                          "use only {common} and {scientific} placeholders") from e


def normalise(rows: np.ndarray) -> np.ndarray:
    """L2-normalise each row (float32)."""
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def text_embeddings(checkpoint: Checkpoint, labels: LabelList, templates: tuple[str, ...]) -> np.ndarray:
    """Mean over templates of the normalised text embeddings, renormalised: ``(L, D)`` float32."""
    import torch

    tokenizer = checkpoint.processor.tokenizer
    per_template = []
    for template in templates:
        tokens = tokenizer(prompts(labels, template), padding=True, truncation=True, max_length=MAX_TOKENS,
                           return_tensors="pt")
        with torch.no_grad():
            out = checkpoint.model.get_text_features(input_ids=tokens["input_ids"],
                                                     attention_mask=tokens["attention_mask"])
        per_template.append(normalise(projected(out).numpy()))
    return normalise(np.mean(per_template, axis=0))


def example_embeddings(bundle: Bundle, labels: LabelList, examples_dir: Path) -> np.ndarray:
    """Per label, the mean normalised audio embedding of every window of ``examples_dir/<label>/*``."""
    params = bundle.manifest.frontend
    frontend = LogMelFrontend(params)
    backend = OrtBackend(bundle, "fp32")
    rows = []
    for name in labels.names:
        folder = examples_dir / name
        files = find_audio_files([folder]) if folder.is_dir() else []
        if not files:
            raise ExportError(f"no example recordings for label '{name}' in {folder}",
                              f"put WAV/FLAC files of '{name}' in {folder}/")
        windows = []
        for path in files:
            samples = read_file(path, params.sampling_rate)
            windows.extend(w.samples for w in clip_windows(samples, params.window_samples, params.window_samples))
        embeddings = backend.embed(frontend.batch(windows))
        rows.append(normalise(embeddings).mean(axis=0))
    return normalise(np.stack(rows))


def store_label_set(bundle: Bundle, labels: LabelList, embeddings: np.ndarray, source: str,
                    templates: tuple[str, ...]) -> Manifest:
    """Write ``labels/<key>.npz`` and register it in the manifest (replacing an older set of the same key)."""
    (bundle.root / LABELS_DIR).mkdir(exist_ok=True)
    rel = f"{LABELS_DIR}/{labels.key}.npz"
    np.savez(bundle.root / rel, embeddings=embeddings.astype(np.float32), names=np.array(labels.names))
    entry = LabelSetEntry(key=labels.key, path=rel, names=labels.names, source=source, templates=templates,
                          scientific_names=labels.scientific_names)
    sets = {**bundle.manifest.label_sets, labels.key: entry}
    return write_manifest(bundle.root, dataclasses.replace(bundle.manifest, label_sets=sets))


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
