"""``logs rescore`` output through the one table writer (:mod:`edge.batch.tables`), chunk by chunk as the archive
is scanned: ``detections.csv``, Raven tables and Audacity tracks exactly as ``analyze`` writes them, with only one
chunk of rows in memory at a time.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.batch.table_text import US_PER_DAY, SelectionColumns
from edge.batch.tables import (
    BirdnetCsv,
    DetectionHistory,
    DetectionsCsv,
    RecordingTables,
    Selection,
    remove_stale_tables,
    selections,
)
from edge.scoring.confidence import Confidence
from edge.scoring.scorer import Scorer, top_k

if TYPE_CHECKING:
    from desk.archive.rescore import RescoreOptions

Chunk = tuple[np.ndarray, np.ndarray]
"""(window ids in ascending order, their cosines against the scorer's label matrix)."""
Places = Callable[[np.ndarray], dict[str, np.ndarray]]
"""Ascending window ids -> per window, aligned: recording (a code into ``recordings``, the distinct recordings),
start, stop (samples), sample_rate, start_utc."""
WRITES_AHEAD = 2
"""Batches of rows chosen but not yet written at most (memory stays at a few batches of rows)."""

STREAM = re.compile(r"(?P<unit>.+)/(?P<boot>[^/]+)/stream(?P<stream>\d+)")
"""The recording of a window a unit analysed live: ``unit/boot/streamN`` (no audio file exists)."""


def utc(value: Any) -> datetime | None:
    """A window's start time from the archive (NaT/None: unknown) as a naive UTC datetime."""
    if value is None or (isinstance(value, np.datetime64) and np.isnat(value)):
        return None
    if isinstance(value, np.datetime64):
        return datetime(1970, 1, 1) + timedelta(microseconds=int(value.astype("datetime64[us]").astype(np.int64)))
    return value  # type: ignore[no-any-return]


def naming(recording: str) -> tuple[str, str, str]:
    """A recording's Begin Path, Begin File and table name: a file's own, or for a unit's stream
    ``unit/boot/streamN`` no path, ``boot_sN`` and ``unit_boot_streamN``."""
    stream = STREAM.fullmatch(recording)
    if stream is None:
        return recording, Path(recording).name, Path(recording).stem
    return "", f"{stream['boot']}_s{stream['stream']}", recording.replace("/", "_")


def columns(place: dict[str, np.ndarray], where: np.ndarray, names: tuple[str, ...], scientific: tuple[str, ...],
            label: np.ndarray, score: np.ndarray, cosine: np.ndarray, rank: np.ndarray, p_correct: np.ndarray,
            band: tuple[float, float]) -> SelectionColumns:
    """Rows as columns: ``place`` per window (:data:`Places`), ``where`` each row's window in it; per row its label
    code into ``names``, score, cosine, rank (1 = best) and p_correct (NaN: none)."""
    source = np.asarray(place["recording"], np.int64)[where]
    named = [naming(str(r)) for r in place["recordings"]]
    stamps = np.asarray(place["start_utc"]).astype("datetime64[us]")[where]
    known = ~np.isnat(stamps)
    rate = np.asarray(place["sample_rate"], np.int64)[where]
    return SelectionColumns(
        sources=tuple(str(r) for r in place["recordings"]), displays=tuple(n[2] for n in named),
        begin_paths=tuple(n[0] for n in named),
        begin_files=tuple(n[1] for n in named), source=source, labels=names, scientific=scientific,
        label=np.asarray(label, np.int64), begin_s=np.asarray(place["start"], np.int64)[where] / rate,
        end_s=np.asarray(place["stop"], np.int64)[where] / rate, score=np.asarray(score, np.float64),
        cosine=np.asarray(cosine, np.float64), rank=np.asarray(rank, np.int64),
        p_correct=np.asarray(p_correct, np.float64), utc_us=np.where(known, stamps.astype(np.int64), 0),
        utc_known=known, band_hz=band)


class RescoreTables:
    """The outputs of one rescore: ``detections.csv`` and per-recording tables, as ``--format`` chose them."""

    def __init__(self, out_dir: Path, formats: Sequence[str], scientific: dict[str, str] | None = None,
                 units: dict[str, str] | None = None, listened: Iterable[tuple[str, datetime]] = ()) -> None:
        """``scientific``: label -> scientific name; ``units``: recording -> unit (the history's site);
        ``listened``: (unit, day) the collection's effort says were listened to."""
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tables(out_dir)
        self.out_dir = out_dir
        self.csv = DetectionsCsv(out_dir) if "csv" in formats else None
        self.birdnet = BirdnetCsv(out_dir) if "birdnet" in formats else None
        self.tables = RecordingTables(out_dir, formats)
        self.scientific = scientific or {}
        self.units = units or {}
        self.history: DetectionHistory | None = None
        if "occupancy" in formats:
            self.history = DetectionHistory()
            self.history.know(self.scientific)
            for unit, day in listened:
                self.history.listen(unit, day, day)
        self.rows = 0

    def write(self, recording: str, rate: int, band: tuple[float, float],
              rows: Iterable[tuple[int, int, str, float, float, int, float | None, datetime | None]]) -> None:
        """Rows of one recording: (start, end samples, label, score, cosine, rank, p_correct, start UTC)."""
        stream = STREAM.fullmatch(recording)
        begin_path, begin_file, display = naming(recording)
        selections = [Selection(start / rate, end / rate, label, score, band, rank=rank, cosine=cosine,
                                p_correct=p_correct, begin_path=begin_path, begin_file=begin_file, utc=when,
                                scientific=self.scientific.get(label, ""))
                      for start, end, label, score, cosine, rank, p_correct, when in rows]
        if not selections:
            return
        if self.csv is not None:
            self.csv.write(recording, selections)
        if self.birdnet is not None:
            self.birdnet.write(recording, selections)
        if self.history is not None:
            site = self.units.get(recording, stream["unit"] if stream else recording)
            for selection in selections:
                if selection.utc is not None:
                    self.history.detect(site, selection.utc, selection.label)
        self.tables.write(recording, display, selections)
        self.rows += len(selections)

    def write_columns(self, columns: SelectionColumns) -> None:
        """Rows of any number of recordings as columns (see :func:`columns`): the same tables as :meth:`write`
        of each recording's rows, made a column at a time."""
        if not len(columns.source):
            return
        if self.csv is not None:
            self.csv.write_columns(columns)
        if self.birdnet is not None:
            for source, first, stop in columns.runs():
                self.birdnet.write(columns.sources[source], selections(columns, first, stop))
        if self.history is not None:
            self._detected(columns)
        self.tables.write_columns(columns)
        self.rows += len(columns.source)

    def _detected(self, c: SelectionColumns) -> None:
        """The detection history's (site, UTC day, label) of the rows, each distinct one once."""
        sites = [self.units.get(r, m["unit"] if (m := STREAM.fullmatch(r)) else r) for r in c.sources]
        days = c.utc_us // US_PER_DAY
        keys = np.unique(np.stack([c.source, days, c.label])[:, c.utc_known], axis=1)
        for source, day, label in keys.T.tolist():
            self.history.detect(sites[source], datetime(1970, 1, 1) + timedelta(days=day),  # type: ignore[union-attr]
                                c.labels[label])

    @property
    def csv_path(self) -> Path | None:
        return None if self.csv is None else self.csv.path

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()
        if self.birdnet is not None:
            self.birdnet.close()
        if self.history is not None:
            self.history.write(self.out_dir)


def window_tables(chunks: Iterable[Chunk], places: Places, scorer: Scorer, names: np.ndarray, shown: np.ndarray,
                  options: RescoreOptions, tables: RescoreTables, band: tuple[float, float],
                  confidence: Confidence | None = None, batch_rows: int = 200_000) -> None:
    """Per window the ``top_k`` best shown labels reaching their threshold (as ``analyze`` selects them: a
    fitted label's own threshold, else ``options.threshold``), with ``p_correct`` where fitted.

    Rows are written in batches of about ``batch_rows`` (one metadata lookup and one formatting pass each: per
    scan chunk of ~17 000 windows, their fixed costs took twice as long)."""
    visible = np.flatnonzero(shown)
    everything = len(visible) == len(names)  # no hidden prompt: the score matrices are used as they are
    shown_names = tuple(str(n) for n in names[visible])
    fitted = confidence.thresholds() if confidence else {}
    global_limit = np.nan if options.threshold is None else options.threshold
    limits = np.array([fitted.get(n, global_limit) for n in shown_names], np.float64)
    scientific = tuple(tables.scientific.get(n, "") for n in shown_names)

    def write(ids: np.ndarray, best: np.ndarray, values: np.ndarray, cosine: np.ndarray, rank: np.ndarray,
              p_correct: np.ndarray) -> None:
        wanted, where = np.unique(ids, return_inverse=True)
        tables.write_columns(columns(places(wanted), where, shown_names, scientific, best, values, cosine, rank,
                                     p_correct, band))

    with ThreadPoolExecutor(1) as writer:  # rows already chosen are written while the next chunks are scored
        pending: deque[Future[None]] = deque()
        held: list[tuple[np.ndarray, ...]] = []

        def hand_over() -> None:
            pending.append(writer.submit(write, *(np.concatenate(column) for column in zip(*held))))
            held.clear()
            while len(pending) > WRITES_AHEAD or (pending and pending[0].done()):
                pending.popleft().result()  # in order; a failed write raises here

        for ids, cosines in chunks:
            scores = scorer.from_cosine(cosines)
            score, cosine = (scores.score, scores.cosine) if everything else (scores.score[:, visible],
                                                                              scores.cosine[:, visible])
            best = top_k(score, options.top_k)
            values = np.take_along_axis(score, best, axis=1)
            keep = ~(values < limits[best])  # a NaN limit (no threshold) keeps the label
            rows, ranks = np.nonzero(keep)  # window by window, best rank first
            if not len(rows):
                continue
            p_correct = (np.take_along_axis(confidence.p_correct(shown_names, score), best, axis=1)[rows, ranks]
                         if confidence else np.full(len(rows), np.nan))
            chosen_cosine = np.take_along_axis(cosine, best, axis=1)[rows, ranks]
            held.append((ids[rows], best[rows, ranks], values[rows, ranks], chosen_cosine, ranks + 1, p_correct))
            if sum(len(part[0]) for part in held) >= batch_rows:
                hand_over()
        if held:
            hand_over()
        for done in pending:
            done.result()
