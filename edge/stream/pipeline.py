"""The analysis chain as plain functions: chunks -> windows -> log-mel -> embeddings -> scores -> detections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.audio.chunk import AudioChunk
from edge.audio.windowing import Window, Windower
from edge.errors import ConfigError
from edge.model.backends import Backend, create_backend
from edge.model.bundle import Bundle
from edge.model.frontend_stream import StreamingLogMel
from edge.model.precision_gate import check_precision, model_key
from edge.scoring.confidence import Confidence, confidence_path, load_confidences
from edge.scoring.heads import HEAD_THRESHOLD, head_key, load_head
from edge.scoring.labels import LabelList
from edge.scoring.scorer import LabelSet, Scorer, Scores, load_label_set
from edge.stream.detector import WindowSelector

DEFAULT_BATCH = 4


@dataclass(frozen=True)
class Stages:
    """The per-window stages, built once per process."""

    frontend: StreamingLogMel
    backend: Backend
    scorer: Scorer
    selector: WindowSelector


def embed_and_score(stages: Stages, windows: list[Window]) -> tuple[np.ndarray, Scores]:
    """Log-mel, embed and score a batch of consecutive windows: (``(B, D)`` float32 embeddings, scores)."""
    embeddings = stages.backend.embed(stages.frontend.batch(windows))
    return embeddings, stages.scorer.score(embeddings)


def score_windows(stages: Stages, windows: list[Window]) -> Scores:
    """Log-mel, embed and score a batch of consecutive windows of one stream."""
    return embed_and_score(stages, windows)[1]


def batched_windows(chunks: Iterable[AudioChunk], windower: Windower, batch: int) -> Iterator[list[Window]]:
    """Windows from a finite chunk stream, grouped in batches of up to ``batch`` (tail window included)."""
    pending: list[Window] = []
    for chunk in chunks:
        pending.extend(windower.push(chunk))
        while len(pending) >= batch:
            yield pending[:batch]
            pending = pending[batch:]
    pending.extend(windower.flush())
    if pending:
        yield pending


def label_rules(bundle: Bundle, labels: LabelList, labels_path: str, heads: tuple[str, ...] = (),
                score_mode: str = "logit", label_thresholds: dict[str, float] | None = None,
                ) -> tuple[LabelSet, dict[str, float], Confidence | None]:
    """The label set (list + heads), per-label thresholds and installed confidence a run scores with.

    Thresholds per label: ``label_thresholds`` (configured), else the bundle's installed confidence, else the
    head default (P = 0.5) for heads; labels not listed keep the run's global threshold.
    """
    label_set = load_label_set(bundle, labels, labels_path)
    for name in heads:
        label_set = label_set.with_head(load_head(bundle, name))
    replaced = [n for n, is_head in zip(label_set.names, label_set.head_mask) if is_head and n in labels.names]
    confidence = load_confidences(bundle, [labels.key, *map(head_key, heads)], replaced)
    if confidence is not None and score_mode not in confidence.score_mode.split("/"):
        raise ConfigError(f"the installed confidence is for score mode '{confidence.score_mode}', not '{score_mode}'",
                          f"use --score-mode {confidence.score_mode} or fit confidence again in this mode")
    per_label = {name: HEAD_THRESHOLD for name, head in zip(label_set.names, label_set.head_mask) if head}
    per_label.update(confidence.thresholds() if confidence else {})
    per_label.update(label_thresholds or {})
    return label_set, per_label, confidence


def scoring_provenance(bundle: Bundle, heads: tuple[str, ...], per_label: dict[str, float],
                       confidence: Confidence | None, threshold: float | None) -> dict[str, Any]:
    """What produced every score and row: the heads (file, sha256, labels), the installed confidence (its id: the
    sha256 of its file(s) in the bundle, target and fitted labels) and the thresholds actually applied per label
    (``global`` for labels without their own). Recorded in ``run.json`` and each boot manifest."""
    files = bundle.manifest.files
    head_rows = []
    for name in heads:
        entry = bundle.manifest.label_sets[head_key(name)]
        head_rows.append({"name": name, "file": entry.path, "sha256": files.get(entry.path, ""),
                          "labels": list(entry.names)})
    fit = None
    if confidence is not None:
        paths = [confidence_path(key) for key in confidence.labels_key.split("+")]
        fit = {"id": "+".join(files.get(p, "")[:16] for p in paths), "files": paths,
               "labels": sorted(confidence.labels), "target": confidence.target}
    return {"heads": head_rows, "confidence": fit,
            "thresholds_applied": {"global": threshold, **dict(sorted(per_label.items()))}}


def build_stages(bundle: Bundle, labels: LabelList, labels_path: str, *, precision: str = "fp32",
                 backend: str = "ort", threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), score_mode: str = "logit",
                 top_k: int = 1, threshold: float | None = None, highpass_hz: float = 0.0,
                 force_precision: bool = False, low_memory: bool = False, heads: tuple[str, ...] = (),
                 label_thresholds: dict[str, float] | None = None) -> Stages:
    """Open the backend and label embeddings once and wire them with the frontend.

    A model whose parity report is missing or failed is refused unless ``force_precision``; so is a high-pass
    filter, which INT8 calibration, ``verify``, parity and example labels never apply (the model must see what its
    precision gates measured). ``heads`` and ``label_thresholds``: see :func:`label_rules`.
    """
    check_precision(bundle, model_key(backend, precision), force_precision)
    if highpass_hz > 0 and not force_precision:
        raise ConfigError(f"audio.highpass_hz is {highpass_hz:g} Hz, but the bundle's INT8 calibration, verify and "
                          "parity gates ran without a high-pass filter",
                          "set audio.highpass_hz: 0, or pass --force-precision to run features the gates never saw")
    manifest = bundle.manifest
    label_set, per_label, confidence = label_rules(bundle, labels, labels_path, heads, score_mode, label_thresholds)
    return Stages(
        frontend=StreamingLogMel(manifest.frontend, highpass_hz=highpass_hz),
        backend=create_backend(bundle, backend=backend, precision=precision, threads=threads, providers=providers,
                               low_memory=low_memory),
        scorer=Scorer(label_set, manifest.logit_scale, mode=score_mode),
        selector=WindowSelector(label_set.names, k=top_k, threshold=threshold, per_label=per_label,
                                confidence=confidence),
    )
