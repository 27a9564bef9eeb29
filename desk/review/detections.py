"""``logs review --detections``: the units' own detections, across units, put up for review.

A unit's detection names the window that scored best (``peak_start_sample`` on its stream); that window is
looked up in the archive (by unit, boot, stream and start sample, through the :class:`WindowStore` door) and
scored against the review's label list like a sampled window, so ``fit-confidence`` and ``train-head`` take the
verdicts as they take any other. Per label, detections are drawn across the score range from every unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from desk.review.page import AUDIO_COLUMNS, ReviewItem, stratified_sample, window_audio, window_keys
from edge.errors import EdgeError
from edge.model.bundle import Bundle
from edge.scoring.labels import LabelList
from edge.scoring.scorer import Scorer

KEY_COLUMNS = ("window_id", "unit_id", "boot_id", "stream", "start_sample")


class ReviewError(EdgeError):
    """Nothing to review."""


def _named(db: Path | Sequence[Path]) -> str:
    return str(db) if isinstance(db, Path) else " + ".join(map(str, db))


def detections_for_review(db: Path | Sequence[Path], bundle: Bundle, labels: LabelList, labels_path: Path,
                          per_label: int, bins: int, seed: int = 0,
                          space: str | None = None) -> tuple[list[ReviewItem], int]:
    """(review items, detections whose window is not archived) for every label of the list the units detected
    (``space``: the archive's embedding space, needed when it holds several)."""
    from desk.archive.rescore import label_set_for
    from desk.archive.spaces import choose_space
    from desk.archive.windows import open_store
    from desk.collect.database import run
    from desk.collect.seasons import connect_seasons

    scorer = Scorer(label_set_for(bundle, labels, labels_path), bundle.manifest.logit_scale)
    names = list(scorer.label_set.names)
    con = connect_seasons(db)
    try:
        detected = run(con, """SELECT unit_id, boot_id, stream, peak_start_sample, label, score FROM detections
                               WHERE list_contains(?::VARCHAR[], label) AND peak_start_sample IS NOT NULL
                               ORDER BY unit_id, boot_id, stream, peak_start_sample, label""", [names])
    finally:
        con.close()
    if not detected:
        raise ReviewError(f"no detection of a label of {labels_path} in {_named(db)}",
                          "review sampled windows instead (leave out --detections), or pass the units' label list")
    with open_store(db) as store:
        where = choose_space(store, bundle, space, "the detections' windows").where
        where = dataclasses.replace(where, units=tuple(sorted({d[0] for d in detected})),
                                    boots=tuple(sorted({d[1] for d in detected})))
        table = store.windows(store.match(where), KEY_COLUMNS)
        found = {(u, b, s, x): int(w) for w, u, b, s, x in zip(*(table[c].to_pylist() for c in KEY_COLUMNS))}
        rng = np.random.default_rng(seed)
        picks: dict[str, list[int]] = {}
        missing = 0
        for name in names:
            ids = [found.get((u, b, s, x)) for u, b, s, x, label, _ in detected if label == name]
            scores = np.array([sc for *_, label, sc in detected if label == name], dtype=np.float64)
            missing += sum(i is None for i in ids)
            kept = np.array([i is not None for i in ids], dtype=bool)
            window_ids = np.array([i for i in ids if i is not None], dtype=np.int64)
            picks[name] = [int(window_ids[j]) for j in stratified_sample(scores[kept], per_label, bins, rng)]
        chosen = sorted({i for ids in picks.values() for i in ids})
        vectors = store.embeddings(chosen)
        picked = store.windows(chosen, AUDIO_COLUMNS)
    scored = scorer.score(vectors).score if chosen else np.empty((0, len(names)))
    row = {wid: r for r, wid in enumerate(chosen)}
    meta = window_audio(db, picked)
    keys = window_keys(picked)
    items = []
    for col, name in enumerate(names):
        for wid in picks[name]:
            unit, start, end, source, source_start_s, length_s = meta[wid]
            items.append(ReviewItem(wid, unit, start, end, name, float(scored[row[wid], col]), source or "",
                                    source_start_s, length_s, keys[wid]))
    return items, missing
