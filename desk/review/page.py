"""``logs review``: a per-label sample of archived windows, stratified across score bins, to be reviewed by ear.

Scores are the unit's own (cosine × logit scale against the bundle's label embeddings) over every archived
window. Per label the windows are split into equal-width score bins and drawn round-robin from them, so the
logistic fit of ``logs fit-confidence`` sees low, middle and high scores. Output: ``review.csv`` (an empty
``verdict`` column) and ``review.html`` (one offline page that plays each window and downloads the filled CSV).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.model.bundle import Bundle
from edge.scoring.labels import LabelList
from edge.scoring.scorer import Scorer

DEFAULT_BINS = 5
WINDOW_AUDIO_SQL = """
    SELECT w.window_id, w.unit_id, CAST(w.start_utc AS VARCHAR), CAST(w.end_utc AS VARCHAR),
           coalesce(w.source_path, c.path),
           CASE WHEN w.source_path IS NOT NULL THEN w.source_offset / w.sample_rate
                ELSE w.start_sample / w.sample_rate - c.clip_start_sample / c.sample_rate END,
           (w.end_sample - w.start_sample) / w.sample_rate
    FROM picked w LEFT JOIN clips c
      ON c.unit_id = w.unit_id AND c.boot_id = w.boot_id
     AND c.clip_start_sample / c.sample_rate <= w.start_sample / w.sample_rate
     AND c.clip_start_sample / c.sample_rate + c.length_s >= w.end_sample / w.sample_rate
    QUALIFY row_number() OVER (PARTITION BY w.window_id ORDER BY c.path) = 1"""
"""Per picked window (metadata from the archive) its audio: the recording it was analysed from, else a card clip
that covers it (seconds)."""
AUDIO_COLUMNS = ("window_id", "unit_id", "boot_id", "stream", "start_utc", "end_utc", "source_path",
                 "source_offset", "start_sample", "end_sample", "sample_rate", "model_sha256")
REVIEW_COLUMNS = ("window_id", "unit_id", "start_utc", "end_utc", "label", "score", "source_path", "source_start_s",
                  "audio", "verdict", "labels_key", "model_sha256", "score_mode", "window_key")
"""``window_key`` (last, so readers of the earlier columns are unchanged): the window's identity, by which
``train-head`` and ``export --format hoplite`` find it whatever the order of ``--db`` (``desk/review/reviewed.py``)."""


@dataclass(frozen=True)
class ReviewItem:
    """One window to review for one label."""

    window_id: int
    unit_id: str
    start_utc: str
    end_utc: str
    label: str
    score: float
    source_path: str
    """Recording (or card clip) holding the window's audio; '' when only its embedding exists."""
    source_start_s: float | None
    length_s: float
    window_key: str = ""
    """The window's identity in the archive (space, unit, boot, stream, start sample): what the page keys a
    verdict by, the same in every database that holds this window (window ids restart at 1 in each)."""


def stratified_sample(scores: np.ndarray, per_label: int, bins: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``per_label`` scores drawn round-robin from ``bins`` equal-width score bins."""
    if scores.size == 0:
        return np.empty(0, dtype=np.int64)
    edges = np.linspace(scores.min(), scores.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    pools = [list(rng.permutation(np.flatnonzero(which == b))) for b in range(bins)]
    picked: list[int] = []
    while len(picked) < per_label and any(pools):
        for pool in pools:
            if pool and len(picked) < per_label:
                picked.append(int(pool.pop()))
    return np.array(sorted(picked), dtype=np.int64)


def sample_for_review(db: Path | Sequence[Path], bundle: Bundle, labels: LabelList, labels_path: Path, per_label: int,
                      bins: int = DEFAULT_BINS, seed: int = 0, space: str | None = None) -> list[ReviewItem]:
    """The review sample of every label, label by label, in window order within a label (``space``: the
    archive's embedding space, needed when it holds several)."""
    from desk.archive.rescore import label_set_for
    from desk.archive.spaces import choose_space
    from desk.archive.windows import open_store

    scorer = Scorer(label_set_for(bundle, labels, labels_path), bundle.manifest.logit_scale)
    with open_store(db) as store:
        where = choose_space(store, bundle, space, "the windows to review").where
        ids, scores = [], []
        for chunk in store.scan(scorer.label_matrix, where):  # chunk by chunk: memory stays bounded
            ids.append(chunk.window_ids)
            scores.append(scorer.from_cosine(chunk.cosines).score.astype(np.float32))
        window_ids = np.concatenate(ids)
        all_scores = np.concatenate(scores)
        rng = np.random.default_rng(seed)
        picks = {name: window_ids[stratified_sample(all_scores[:, col], per_label, bins, rng)]
                 for col, name in enumerate(scorer.label_set.names)}
        picked = store.windows(sorted({int(i) for chosen in picks.values() for i in chosen}), AUDIO_COLUMNS)
    meta = window_audio(db, picked)
    keys = window_keys(picked)
    position = {int(w): i for i, w in enumerate(window_ids)}
    items = []
    for col, name in enumerate(scorer.label_set.names):
        for wid in picks[name]:
            unit, start, end, source, source_start_s, length_s = meta[int(wid)]
            items.append(ReviewItem(int(wid), unit, start, end, name, float(all_scores[position[int(wid)], col]),
                                    source or "", source_start_s, length_s, keys[int(wid)]))
    return items


def window_keys(picked: Any) -> dict[int, str]:
    """Window id -> its identity in the archive, ``space|unit|boot|stream|start_sample`` (``picked``: an Arrow
    table of :data:`AUDIO_COLUMNS`)."""
    columns = [picked[name].to_pylist() for name in ("window_id", "model_sha256", "unit_id", "boot_id", "stream",
                                                     "start_sample")]
    return {int(wid): "|".join(map(str, rest)) for wid, *rest in zip(*columns)}


def window_audio(db: Path | Sequence[Path], picked: Any) -> dict[int, tuple[Any, ...]]:
    """Window id -> (unit, start UTC, end UTC, audio file, start in it (s), length (s)) for the ``picked``
    window metadata (an Arrow table of :data:`AUDIO_COLUMNS`), the card clips looked up in the collection (in all
    of ``db``'s databases: a boot's clips are in the database that holds the boot)."""
    from desk.collect.database import run
    from desk.collect.seasons import connect_seasons

    con = connect_seasons(db)
    try:
        con.register("picked", picked)
        return {row[0]: row[1:] for row in run(con, WINDOW_AUDIO_SQL)}
    finally:
        con.close()


def review_row(item: ReviewItem, labels_key: str, model_sha256: str) -> dict[str, str | int]:
    """The ``review.csv`` fields of one item (verdict empty)."""
    start_s = "" if item.source_start_s is None else f"{item.source_start_s:.3f}"
    return {"window_id": item.window_id, "unit_id": item.unit_id, "start_utc": item.start_utc,
            "end_utc": item.end_utc, "label": item.label, "score": f"{item.score:.6g}",
            "source_path": item.source_path, "source_start_s": start_s,
            "audio": f"{item.source_path}@{start_s}" if item.source_path else "", "verdict": "",
            "labels_key": labels_key, "model_sha256": model_sha256, "score_mode": "logit",
            "window_key": item.window_key}


def write_review_csv(path: Path, items: list[ReviewItem], labels_key: str, model_sha256: str) -> None:
    """``review.csv`` with an empty verdict column (yes / no / unsure)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REVIEW_COLUMNS)
        writer.writeheader()
        writer.writerows(review_row(item, labels_key, model_sha256) for item in items)


def write_review_page(path: Path, items: list[ReviewItem], labels_key: str, model_sha256: str,
                      on_progress: Callable[[int, int], None] | None = None) -> None:
    """``review.html``: every window's audio (MP3) and spectrogram inlined, under a CSP that runs only the
    page's own script; verdicts download as ``review.csv``. ``on_progress(done, total)`` after each window."""
    from importlib.resources import files

    from desk.pages import content_security_policy, embedded_json
    from desk.review.snippets import snippet

    rows = []
    cut: dict[tuple[str, float | None, float], Any] = {}
    for done, item in enumerate(items, 1):
        where = (item.source_path, item.source_start_s, item.length_s)
        if where not in cut:  # a window reviewed for several labels is cut once
            cut[where] = snippet(Path(item.source_path), item.source_start_s or 0.0, item.length_s) \
                if item.source_path else None
        clip = cut[where]
        rows.append({**review_row(item, labels_key, model_sha256), "audio_uri": clip.audio_uri if clip else None,
                     "spectrogram": clip.spectrogram_uri if clip else None})
        if on_progress is not None:
            on_progress(done, len(items))
    templates = files("desk.review").joinpath("templates")
    script = templates.joinpath("review.js").read_text(encoding="utf-8")
    page = templates.joinpath("review.html").read_text(encoding="utf-8")
    page = page.replace("__CSP__", content_security_policy(script)).replace("__SCRIPT__", script)
    payload = embedded_json({"columns": list(REVIEW_COLUMNS), "rows": rows, "labels_key": labels_key})
    temp = path.with_name(f".tmp-{path.name}")
    temp.write_text(page.replace("__REVIEW_DATA__", payload), encoding="utf-8")
    temp.replace(path)
