"""``logs rescore``: every archived window against a new label list — a matrix product instead of re-analysis.

Output is what ``analyze`` writes (``detections.csv`` and one Raven table per recording or unit stream, through
the same writer, :mod:`edge.batch.tables`), made by the same scorer and the same per-window selection, so on the
same audio the two agree window for window (scores within fp16 rounding). With a unit config the unit's detector
rules run over each stream instead, so the rows are the events a unit with that list would have logged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.rescore_tables import RescoreTables, utc, window_tables
from desk.archive.windows import WindowFilter, WindowStore, open_store, require_windows
from desk.collect.database import CollectError
from edge.batch.tables import DEFAULT_FORMATS
from edge.errors import EdgeError, LabelError
from edge.model.bundle import Bundle, open_bundle
from edge.scoring.confidence import load_confidences
from edge.scoring.labels import LabelList, read_labels
from edge.scoring.scorer import LabelSet, Scorer, load_label_set
from edge.stream.detector import DetectionEvent, DetectorOptions, EventDetector

EVENT_COLUMNS = ("recording", "start", "stop", "sample_rate", "start_utc")
"""Per window: the recording it belongs to (file, else unit/boot/stream), its place in it (samples), its time."""


@dataclass(frozen=True)
class RescoreOptions:
    threshold: float | None = None
    top_k: int = 1
    score_mode: str = "logit"
    rules: DetectorOptions | None = None
    """The unit's detector rules (``--config``): events per stream instead of per-window rows."""
    hidden_labels: tuple[str, ...] = ()
    """Scored but never written (the config's background and privacy prompts)."""
    extra_prompts: tuple[str, ...] = ()
    """Prompts appended to the label list before scoring (the config's background and privacy prompts)."""
    formats: tuple[str, ...] = DEFAULT_FORMATS
    """Result tables written (``--format``): csv, raven, audacity."""


@dataclass(frozen=True)
class RescoreResult:
    csv_path: Path | None
    """``detections.csv``; None when ``--format`` leaves csv out."""
    windows: int
    rows: int
    other_model: int
    """Archived windows skipped because another model computed them (a different embedding space)."""


def label_set_for(bundle: Bundle, labels: LabelList, labels_path: Path) -> LabelSet:
    """Label embeddings from the bundle; labels it lacks come from its text encoder when it has one."""
    try:
        return load_label_set(bundle, labels, str(labels_path))
    except LabelError as missing:
        try:
            from edge.scoring.text_encoder import TextEncoder
        except ImportError:
            raise missing from None
        try:
            encoder = TextEncoder.from_bundle(bundle.root)
        except EdgeError:  # no text encoder in this bundle: the missing labels' message says what to run
            raise missing from None
        return LabelSet(labels.names, np.asarray(encoder.embed(list(labels.names)), np.float32))


def bundle_model_shas(bundle: Bundle) -> list[str]:
    return sorted({bundle.manifest.files[m.path] for m in bundle.manifest.models.values()
                   if m.path in bundle.manifest.files})


def model_filter(store: WindowStore, bundle: Bundle) -> tuple[WindowFilter, int, int]:
    """(the bundle's embedding space as a filter, windows kept, windows of other models); raises when no
    archived window is in the bundle's space."""
    shas = bundle_model_shas(bundle)
    total = require_windows(store)
    kept = sum(n for sha, n in store.spaces().items() if sha in shas)
    if kept == 0:
        raise CollectError(f"none of the {total} archived windows was computed by a model of bundle {bundle.root}",
                           "pass the bundle the units ran (embeddings from different models are not comparable)")
    return WindowFilter(spaces=tuple(shas)), kept, total - kept


def _meta(store: WindowStore, ids: np.ndarray) -> dict[str, np.ndarray]:
    table = store.windows(ids, EVENT_COLUMNS)
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def rescore(db_path: Path, bundle_dir: Path, labels_path: Path, out_dir: Path,
            options: RescoreOptions) -> RescoreResult:
    """Score every archived window of the bundle's model against ``labels_path``; writes ``out_dir``."""
    bundle = open_bundle(bundle_dir)
    listed = read_labels(labels_path)
    labels = LabelList(listed.names + options.extra_prompts, listed.scientific_names + ("",) * len(
        options.extra_prompts))
    scorer = Scorer(label_set_for(bundle, labels, labels_path), bundle.manifest.logit_scale, mode=options.score_mode)
    names = np.array(labels.names, dtype=object)
    shown = np.array([n not in options.hidden_labels for n in labels.names])
    band = (bundle.manifest.frontend.f_min, bundle.manifest.frontend.f_max)
    with open_store(db_path) as store:
        where, kept, other = model_filter(store, bundle)
        tables = RescoreTables(out_dir, options.formats)
        try:
            if options.rules is None:
                chunks = ((chunk.window_ids, chunk.cosines) for chunk in store.scan(scorer.label_matrix, where))
                window_tables(chunks, lambda ids: _meta(store, ids), scorer, names, shown, options, tables, band,
                              load_confidences(bundle, [listed.key]))
            else:
                _write_events(store, where, scorer, tables, band, names, shown, options.rules)
        finally:
            tables.close()
        return RescoreResult(tables.csv_path, kept, tables.rows, other)


def _write_events(store: WindowStore, where: WindowFilter, scorer: Scorer, tables: RescoreTables,
                  band: tuple[float, float], names: np.ndarray, shown: np.ndarray, rules: DetectorOptions) -> None:
    """The unit's detector over each (unit, boot, stream) in sample order; a gap in the windows closes events.

    Streams are read chunk by chunk and the events closed in each chunk written before the next is read, so
    memory stays bounded however long a stream ran.
    """
    from edge.scoring.scorer import Scores

    streams = store.tally(("unit_id", "boot_id", "stream"), where)
    hidden = {str(n) for n, s in zip(names, shown) if not s}
    for unit, boot, stream in streams:
        detector = EventDetector(tuple(str(n) for n in names), rules)
        previous_end: int | None = None
        anchor: tuple[Any, int, int, str] | None = None
        one_stream = replace(where, units=(unit,), boots=(boot,), streams=(stream,))
        for chunk in store.scan(scorer.label_matrix, one_stream):
            scores = scorer.from_cosine(chunk.cosines)
            meta = _meta(store, chunk.window_ids)
            if anchor is None:
                anchor = (utc(meta["start_utc"][0]), int(meta["start"][0]), int(meta["sample_rate"][0]),
                          str(meta["recording"][0]))
            events = []
            for i in range(len(chunk.window_ids)):
                start, end = int(meta["start"][i]), int(meta["stop"][i])
                if previous_end is not None and start > previous_end:
                    events += detector.flush()
                events += detector.update([start], [end], Scores(scores.cosine[i : i + 1], scores.score[i : i + 1]))
                previous_end = end
            _write_stream_events(tables, anchor, band, events, hidden)
        if anchor is not None:
            _write_stream_events(tables, anchor, band, detector.flush(), hidden)


def _write_stream_events(tables: RescoreTables, anchor: tuple[Any, int, int, str], band: tuple[float, float],
                         events: list[DetectionEvent], hidden: set[str]) -> None:
    """Events the detector closed during one chunk of a stream, in start order (rows follow the order events
    close, as on a unit); UTC from the stream's first window."""
    first_utc, first_start, rate, recording = anchor
    events.sort(key=lambda e: (e.start_sample, e.label))
    tables.write(recording, rate, band, (
        (e.start_sample, e.end_sample, e.label, e.peak_score, e.peak_cosine, 1, None,
         None if first_utc is None else first_utc + timedelta(seconds=(e.start_sample - first_start) / rate))
        for e in events if e.label not in hidden))
