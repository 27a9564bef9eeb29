"""``logs train-head``: a linear (logistic) head per label on archived embeddings of reviewed windows.

Positives are windows reviewed ``yes`` for the label plus every window of its example recordings
(``--examples DIR/<label>/*.wav``); negatives are windows reviewed ``no``. Each head is cross-validated on
stratified folds, with the zero-shot score of the same windows (cosine × logit scale against the label's
text embedding, where the bundle has one) evaluated on the same folds, and then refitted on all data. The
heads go into the bundle as one label set (see ``edge.scoring.heads``) that the unit scores with numpy alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from desk.review.confidence import read_review
from edge.audio.files import find_audio_files
from edge.errors import ConfigError
from edge.model.bundle import Bundle, LabelSetEntry, sha256_file, write_manifest
from edge.model.space import check_space, embedding_space, space_of_model
from edge.scoring.heads import head_key
from edge.scoring.scorer import HEAD_SOURCE

MIN_PER_CLASS = 3
"""Fewest positives and fewest negatives a label needs for a head (and for cross-validation)."""
MAX_FOLDS = 5
REGULARISATION_C = 1.0
"""Inverse L2 strength of scikit-learn's LogisticRegression (its default)."""
IDENTITY = ("space", "unit_id", "boot_id", "stream", "start_sample")
"""A window's identity in any database (its id is not: it depends on the order of ``--db``)."""


@dataclass(frozen=True)
class HeadFit:
    """One label's head and how it did against the zero-shot score on held-out folds."""

    label: str
    weights: np.ndarray
    bias: float
    positives: int
    negatives: int
    folds: int
    ap_head: float
    auc_head: float
    ap_zero_shot: float | None
    auc_zero_shot: float | None


@dataclass(frozen=True)
class TrainingSet:
    """Reviewed (and example) embeddings of one label."""

    label: str
    embeddings: np.ndarray
    """``(N, D)`` float32."""
    correct: np.ndarray
    """``(N,)`` bool."""


def fit_head(data: TrainingSet, zero_shot: np.ndarray | None, seed: int = 0) -> HeadFit:
    """Cross-validated logistic head on one label's data, refitted on all of it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    y = data.correct.astype(int)
    positives, negatives = int(y.sum()), int((1 - y).sum())
    folds = min(MAX_FOLDS, positives, negatives)
    held_out_head = np.empty(y.size)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(data.embeddings, y):
        model = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=1000)
        model.fit(data.embeddings[train], y[train])
        held_out_head[test] = model.decision_function(data.embeddings[test])
    final = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=1000)
    final.fit(data.embeddings, y)
    return HeadFit(
        label=data.label, weights=final.coef_[0].astype(np.float32), bias=float(final.intercept_[0]),
        positives=positives, negatives=negatives, folds=folds,
        ap_head=float(average_precision_score(y, held_out_head)), auc_head=float(roc_auc_score(y, held_out_head)),
        ap_zero_shot=None if zero_shot is None else float(average_precision_score(y, zero_shot)),
        auc_zero_shot=None if zero_shot is None else float(roc_auc_score(y, zero_shot)),
    )


def zero_shot_scores(bundle: Bundle, label: str, embeddings: np.ndarray) -> np.ndarray | None:
    """Cosine × logit scale against the label's text embedding in any label set of the bundle, else None."""
    for entry in bundle.manifest.label_sets.values():
        if entry.source == HEAD_SOURCE:
            continue
        names = [n.casefold() for n in entry.names]
        if label.casefold() in names:
            row = np.load(bundle.root / entry.path)["embeddings"][names.index(label.casefold())]
            return np.asarray(embeddings @ row.astype(np.float32) * bundle.manifest.logit_scale)
    return None


def training_sets(dbs: Path | Sequence[Path], bundle: Bundle, review_csv: Path, examples: Path | None,
                  space: str | None = None) -> list[TrainingSet]:
    """Per label of the review, its reviewed archive embeddings plus its example recordings as positives.

    ``dbs``: one database or several read as one; reviewed windows are found by their identity
    (``desk.review.reviewed``) and each label's rows ordered by it (unit, boot, stream, start sample), so the sets,
    and the heads fitted on them, do not depend on the order of ``--db``. ``space``: the archive's embedding space
    to train in (a prefix; needed when it holds several, as on every command that reads windows); every reviewed
    window must be in it.
    """
    from desk.archive.spaces import choose_space
    from desk.archive.windows import open_store
    from desk.collect.seasons import distinct
    from desk.review.reviewed import locate_reviewed, read_reviewed
    from edge.model.examples import embed_recordings

    databases = distinct([dbs] if isinstance(dbs, Path) else dbs)
    named = databases[0] if len(databases) == 1 else " and ".join(map(str, databases))
    check_space(f"review {review_csv}", read_review(review_csv).model_sha256, bundle,
                "train the head into the bundle the review was made with, or review again with this one")
    rows = [row for row in read_reviewed(review_csv) if row.verdict in ("yes", "no")]
    by_label: dict[str, dict[tuple[Any, ...], tuple[int, bool]]] = {}
    with open_store(databases) as store:
        choose_space(store, bundle, space, f"the archived windows of {named}")
        found = locate_reviewed(store, rows, review_csv, len(databases) > 1)
        meta = store.windows(found, IDENTITY).to_pylist() if len(found) else []
        for key in {m["space"] for m in meta}:
            check_space(f"reviewed windows of {named}", space_of_model(bundle, key) or key, bundle,
                        "train with the bundle the units ran (the export their windows came from)")
        for row, window, m in zip(rows, found.tolist(), meta):  # a window reviewed twice: its last verdict
            by_label.setdefault(row.label, {})[tuple(m[c] for c in IDENTITY[1:])] = (window, row.verdict == "yes")
        ordered = {label: [verdicts[k] for k in sorted(verdicts)] for label, verdicts in by_label.items()}
        archived = {label: store.embeddings([w for w, _ in pairs]) for label, pairs in ordered.items()}
    sets = []
    for label, pairs in sorted(ordered.items()):
        embeddings = archived[label]
        correct = np.array([yes for _, yes in pairs], dtype=bool)
        folder = examples / label if examples else None
        if folder is not None and folder.is_dir():
            extra = embed_recordings(bundle, find_audio_files([folder]))
            embeddings = np.concatenate([embeddings, extra])
            correct = np.concatenate([correct, np.ones(len(extra), dtype=bool)])
        sets.append(TrainingSet(label, embeddings.astype(np.float32), correct))
    return sets


def train_heads(sets: list[TrainingSet], bundle: Bundle, seed: int = 0) -> tuple[list[HeadFit], dict[str, str]]:
    """Fit a head for every label with enough data; the rest are returned with the reason."""
    fits, skipped = [], {}
    for data in sets:
        positives, negatives = int(data.correct.sum()), int((~data.correct).sum())
        if positives < MIN_PER_CLASS or negatives < MIN_PER_CLASS:
            skipped[data.label] = f"{positives} positives and {negatives} negatives (needs {MIN_PER_CLASS} of each)"
            continue
        fits.append(fit_head(data, zero_shot_scores(bundle, data.label, data.embeddings), seed))
    return fits, skipped


def install_head(bundle: Bundle, name: str, fits: list[HeadFit], provenance: dict[str, Any]) -> Path:
    """Write the heads as label set ``head-<name>`` of the bundle (checksummed in its manifest)."""
    if not fits:
        raise ConfigError("no label had enough reviewed windows for a head",
                          f"review more windows (at least {MIN_PER_CLASS} yes and {MIN_PER_CLASS} no per label)")
    key = head_key(name)
    rel = f"labels/{key}.npz"
    (bundle.root / "labels").mkdir(exist_ok=True)
    names = tuple(f.label for f in fits)
    space = embedding_space(bundle)
    record = {**provenance, "model_sha256": space, "created_utc": datetime.now(timezone.utc).isoformat(),
              "labels": {f.label: {k: v for k, v in dataclasses.asdict(f).items() if k not in ("weights", "label")}
                         for f in fits}}
    np.savez(bundle.root / rel, embeddings=np.stack([f.weights for f in fits]),
             bias=np.array([f.bias for f in fits], dtype=np.float32), names=np.array(names),
             provenance=np.array(json.dumps(record)))
    entry = LabelSetEntry(key=key, path=rel, names=names, source=HEAD_SOURCE,
                          model_revision=bundle.manifest.model_revision, embedding_space=space)
    write_manifest(bundle.root, dataclasses.replace(bundle.manifest,
                                                    label_sets={**bundle.manifest.label_sets, key: entry}))
    return bundle.root / rel


def review_provenance(review_csv: Path, examples: Path | None, dbs: Sequence[Path] = ()) -> dict[str, Any]:
    """What a head was trained from (the databases sorted: their order changes nothing)."""
    from desk.collect.seasons import distinct

    return {"review": str(review_csv), "review_sha256": sha256_file(review_csv),
            "examples": str(examples) if examples else None, "databases": sorted(map(str, distinct(dbs)))}
