"""The verdicts of a ``review.csv`` and the archived windows they are about, whatever the order of ``--db``.

A review made over several databases names each window by its id as that review saw it (``place << 40 | own
id``: it depends on the order of ``--db`` then), and by its identity in the archive, ``window_key``
(``model_sha256|unit|boot|stream|start_sample``: the same in every database and every order). ``train-head`` and
``export --format hoplite`` find reviewed windows by that key; a review written before it existed is read by
window id, from one database only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from desk.archive.windows import WindowStore
from edge.errors import ConfigError


@dataclass(frozen=True)
class Reviewed:
    """One row of ``review.csv`` with a verdict."""

    line: int
    window_id: int
    """As the review saw it (see the module docstring)."""
    label: str
    verdict: str
    """yes, no or unsure."""
    score: float | None
    unit: str
    key: str
    """``window_key``; '' in a review written before it existed."""


def read_reviewed(path: Path) -> list[Reviewed]:
    """Every row of ``review.csv`` with a verdict; the one-line errors of ``fit-confidence`` for a missing or
    malformed file, and for a row without a window id."""
    from desk.review.confidence import read_review

    read_review(path)
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        table = csv.DictReader(handle)
        if "window_id" not in (table.fieldnames or ()):
            raise ConfigError(f"{path} has no window_id column", "pass the review.csv written by `logs review`")
        for number, row in enumerate(table, start=2):
            verdict = (row.get("verdict") or "").strip().lower()
            if not verdict:
                continue
            try:
                window = int(row.get("window_id") or "")
            except ValueError:
                raise ConfigError(f"{path} line {number}: window_id '{row.get('window_id')}' is not a window id",
                                  "pass the review.csv written by `logs review`") from None
            score = float(row["score"]) if row.get("score") else None
            rows.append(Reviewed(number, window, row["label"], verdict, score, row.get("unit_id") or "",
                                 (row.get("window_key") or "").strip()))
    return rows


def locate_reviewed(store: WindowStore, rows: list[Reviewed], path: Path, several: bool) -> np.ndarray:
    """The ids in ``store`` of the windows ``rows`` (of review ``path``) are about, one per row.

    ``several``: ``store`` reads several databases, where a review's window ids are not to be trusted (they
    depend on the order of ``--db``), so a review without window keys is refused. A window found in none of the
    databases, or of another unit than the review says, is a one-line error naming it.
    """
    if not rows:
        return np.zeros(0, np.int64)
    if all(row.key for row in rows):
        parts = [_split_key(row, path) for row in rows]
        found = store.locate([p[1] for p in parts], [p[2] for p in parts], np.array([p[3] for p in parts]),
                             np.array([p[4] for p in parts]))
        for row, window in zip(rows, found.tolist()):
            if window == 0:
                raise ConfigError(f"{path} line {row.line}: window {row.key} is in none of the databases given",
                                  "pass every --db the review was made on")
        return found
    if several:
        raise ConfigError(f"{path} names its windows by id only (written before review.csv had window_key): with "
                          "several --db its ids depend on their order", "pass the one --db it was made on, or "
                          "review again with `logs review` (its review.csv names each window by its identity)")
    ids = np.array([row.window_id for row in rows], np.int64)
    known = set(store.match().tolist())
    for row in rows:
        if row.window_id not in known:
            raise ConfigError(f"{path} line {row.line}: window {row.window_id} is not in the archive",
                              "pass the review.csv made with `logs review` on this --db")
    units = store.windows(ids, ("unit_id",)).column("unit_id").to_pylist()
    for row, unit in zip(rows, units):
        if row.unit and row.unit != unit:
            raise ConfigError(f"{path}: window {row.window_id} is unit {row.unit} in the review but {unit} in the "
                              "archive", "the review was made on another database: pass that one as --db")
    return ids


def _split_key(row: Reviewed, path: Path) -> tuple[str, str, str, int, int]:
    """(model sha256, unit, boot, stream, start sample) of a row's ``window_key``."""
    try:
        sha, unit, rest = row.key.split("|", 2)
        boot, stream, start = rest.rsplit("|", 2)
        parts = (sha, unit, boot, int(stream), int(start))
    except ValueError:
        raise ConfigError(f"{path} line {row.line}: window_key '{row.key}' is not sha|unit|boot|stream|start",
                          "pass the review.csv written by `logs review`; window keys are never edited") from None
    if row.unit and row.unit != unit:
        raise ConfigError(f"{path} line {row.line}: window {row.window_id} is unit {row.unit} in the review but "
                          f"{unit} in its window_key", "pass the review.csv written by `logs review`, unedited")
    return parts
