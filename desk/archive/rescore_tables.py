"""Per-window rescore output at archive scale: selections (with their windows' place and time, from the archive's
:class:`~desk.archive.windows.WindowStore`) gathered in a temporary Parquet file, then formatted and written by
an in-memory DuckDB (``detections.csv`` and one Raven table per recording), never one Python row at a time.

Every field is formatted as :mod:`edge.batch.tables` formats it for ``analyze`` (``%.3f`` seconds, ``%.6g``
scores, ISO-8601 UTC), so the two can be compared line by line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from desk.archive.windows import WindowFilter, WindowStore
from edge.batch.tables import DETECTIONS_CSV, RAVEN_SUFFIX
from edge.card.cardformat import TEMP_PREFIX
from edge.scoring.confidence import Confidence
from edge.scoring.scorer import Scorer, top_k

if TYPE_CHECKING:
    import duckdb

    from desk.archive.rescore import RescoreOptions

SELECTIONS = "selections.parquet"
PLACE = ("recording", "start", "stop", "sample_rate", "start_utc")
"""What a selection carries of its window (see :data:`desk.archive.windows.DESCRIPTION`)."""
UTC_TEXT = """CASE WHEN s.start_utc IS NULL THEN NULL
    WHEN date_part('microseconds', s.start_utc) % 1000000 = 0 THEN strftime(s.start_utc, '%Y-%m-%dT%H:%M:%S+00:00')
    ELSE strftime(s.start_utc, '%Y-%m-%dT%H:%M:%S.%f+00:00') END"""
"""Python's ``datetime.isoformat()`` of an aware UTC time (microseconds only when not zero)."""
SELECTED = f"""
    SELECT s.recording, s.window_id, s.rank, l.label,
        printf('%.3f', s.start / s.sample_rate::DOUBLE) AS start_s,
        printf('%.3f', s.stop / s.sample_rate::DOUBLE) AS end_s,
        printf('%.6g', s.score::DOUBLE) AS score, printf('%.6g', s.cosine::DOUBLE) AS cosine, {UTC_TEXT} AS start_utc,
        coalesce(printf('%.4f', s.p_correct), '') AS p_correct
    FROM read_parquet(?) s JOIN rescore_labels l USING (label_index)"""


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def window_tables(store: WindowStore, where: WindowFilter, scorer: Scorer, names: np.ndarray, shown: np.ndarray,
                  options: RescoreOptions, out_dir: Path, band: tuple[float, float],
                  confidence: Confidence | None = None) -> int:
    """Per window the ``top_k`` best shown labels reaching their threshold (as ``analyze`` selects them: a
    fitted label's own threshold, else ``options.threshold``), with ``p_correct`` where fitted; returns
    the number of rows written."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    visible = np.flatnonzero(shown)
    temp = out_dir / (TEMP_PREFIX + SELECTIONS)
    schema = pa.schema([("window_id", pa.int64()), ("rank", pa.int32()), ("label_index", pa.int32()),
                        ("score", pa.float32()), ("cosine", pa.float32()), ("p_correct", pa.float64()),
                        ("recording", pa.string()), ("start", pa.int64()), ("stop", pa.int64()),
                        ("sample_rate", pa.int32()), ("start_utc", pa.timestamp("us"))])
    shown_names = tuple(str(n) for n in names[visible])
    fitted = confidence.thresholds() if confidence else {}
    global_limit = np.nan if options.threshold is None else options.threshold
    limits = np.array([fitted.get(n, global_limit) for n in shown_names], np.float64)
    total = 0
    with pq.ParquetWriter(temp, schema, compression="none") as writer:
        for chunk in store.scan(scorer.label_matrix, where):
            scores = scorer.from_cosine(chunk.cosines)
            score, cosine = scores.score[:, visible], scores.cosine[:, visible]
            best = top_k(score, options.top_k)
            values = np.take_along_axis(score, best, axis=1)
            keep = ~(values < limits[best])  # a NaN limit (no threshold) keeps the label
            rows, ranks = np.nonzero(keep)
            total += len(rows)
            p_correct = (np.take_along_axis(confidence.p_correct(shown_names, score), best, axis=1)[rows, ranks]
                         if confidence else np.full(len(rows), np.nan))
            selected, place = np.unique(chunk.window_ids[rows], return_inverse=True)
            windows = store.windows(selected, PLACE).take(place)
            writer.write_table(pa.table({
                "window_id": chunk.window_ids[rows], "rank": (ranks + 1).astype(np.int32),
                "label_index": best[rows, ranks].astype(np.int32), "score": values[rows, ranks],
                "cosine": np.take_along_axis(cosine, best, axis=1)[rows, ranks],
                "p_correct": pa.array(p_correct, pa.float64(), mask=np.isnan(p_correct)),
                **{name: windows[name].cast(schema.field(name).type) for name in PLACE}}, schema=schema))
    con = duckdb.connect()
    con.register("rescore_labels", pa.table({"label_index": np.arange(len(visible), dtype=np.int32),
                                             "label": [str(n) for n in names[visible]]}))
    try:
        _write_csv(con, temp, out_dir / DETECTIONS_CSV)
        _write_raven(con, temp, out_dir, band)
    finally:
        con.close()
        temp.unlink(missing_ok=True)
    return total


def _write_csv(con: duckdb.DuckDBPyConnection, selections: Path, path: Path) -> None:
    query = (f"SELECT recording AS file, start_s, end_s, label, score, cosine, rank, start_utc, p_correct "
             f"FROM ({SELECTED}) "
             "ORDER BY window_id, rank")
    con.execute(f"COPY ({query.replace('?', _sql_text(str(selections)))}) TO {_sql_text(str(path))} "
                "(FORMAT csv, HEADER true)")


def _write_raven(con: duckdb.DuckDBPyConnection, selections: Path, out_dir: Path,
                 band: tuple[float, float]) -> None:
    """One Raven selection table per recording, named like ``analyze`` names them."""
    source = SELECTED.replace("?", _sql_text(str(selections)))
    recordings = [r[0] for r in con.execute(f"SELECT DISTINCT recording FROM ({source}) ORDER BY 1").fetchall()]
    used: set[str] = set()
    for recording in recordings:
        stem = Path(recording).stem if "/stream" not in recording else recording.replace("/", "_")
        name, counter = stem + RAVEN_SUFFIX, 2
        while name in used:
            name, counter = f"{stem}_{counter}{RAVEN_SUFFIX}", counter + 1
        used.add(name)
        begin_path = _sql_text(recording if "/stream" not in recording else "")  # a unit stream is no file
        query = f"""SELECT row_number() OVER (ORDER BY window_id, rank) AS "Selection", 'Spectrogram 1' AS "View",
                1 AS "Channel", start_s AS "Begin Time (s)", end_s AS "End Time (s)",
                '{band[0]:g}' AS "Low Freq (Hz)", '{band[1]:g}' AS "High Freq (Hz)", label AS "Species",
                score AS "Score", rank AS "Rank", {begin_path} AS "Begin Path"
            FROM ({source}) WHERE recording = {_sql_text(recording)} ORDER BY window_id, rank"""
        con.execute(f"COPY ({query}) TO {_sql_text(str(out_dir / name))} (FORMAT csv, HEADER true, DELIMITER '\t')")
