"""``logs rescore``: every archived window against a new label list — a matrix product instead of re-analysis.

Output is what ``analyze`` writes (``detections.csv`` and one Raven table per recording or unit stream, through
the same writer, :mod:`edge.batch.tables`), made by the same scorer and the same per-window selection, so on the
same audio the two agree window for window (scores within fp16 rounding). With a unit config the unit's detector
rules run over each stream instead, so the rows are the events a unit with that list would have logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.arrow_numpy import column_numpy
from desk.archive.rescore_tables import RescoreTables, utc, window_tables
from desk.archive.spaces import choose_space
from desk.archive.windows import Scored, WindowFilter, WindowStore, open_store
from desk.collect.database import listened_days
from edge.batch.tables import DEFAULT_FORMATS
from edge.errors import ConfigError, EdgeError, LabelError
from edge.model.bundle import Bundle, open_bundle
from edge.scoring.confidence import Confidence, load_confidences
from edge.scoring.heads import head_key, load_head
from edge.scoring.labels import LabelList, read_labels
from edge.scoring.scorer import LabelSet, Scorer, load_label_set
from edge.stream.detector import DetectionEvent, DetectorOptions, EventDetector

CELLS_PER_PIECE = 4_000_000
"""Window × label scores held at once (16 MB a float32 array): a scan chunk is cut into pieces of at most this."""
ROWS_PER_PIECE = 200_000
"""Output rows (window × kept rank) made at once, and written at once: with ``--top-k`` in the thousands a piece
is a few windows."""
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
    heads: tuple[str, ...] = ()
    """Trained heads of the bundle (``--head``, else the config's ``analysis.heads``): their labels replace the
    same-named labels' zero-shot scores, as on the unit."""
    space: str | None = None
    """``--space``: the archive's embedding space to work in (needed when it holds several)."""
    engine: str = "local"
    """Who reads the archive's files: ``local`` (this process) or ``ray`` (a Ray Data job, see ray_scan.py)."""
    ray_address: str | None = None
    """The Ray cluster to join (None: a private local instance)."""
    ray_stall_s: float | None = None
    """Ray: fail the job after this long without a result (None: the default of desk/ray_stall.py)."""


@dataclass(frozen=True)
class RescoreResult:
    csv_path: Path | None
    """``detections.csv``; None when ``--format`` leaves csv out."""
    windows: int
    rows: int
    other_model: int
    """Archived windows of other embedding spaces, left alone by an explicit ``--space``."""


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


def pieces(chunks: Iterable[Scored], labels: int, top_k: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Scan chunks cut so that no piece holds more than :data:`CELLS_PER_PIECE` scores or can make more than
    :data:`ROWS_PER_PIECE` output rows: memory stays flat whatever the archive, the label list or ``top_k``."""
    windows = max(1, min(CELLS_PER_PIECE // max(labels, 1), ROWS_PER_PIECE // max(min(top_k, labels), 1)))
    for chunk in chunks:
        for first in range(0, len(chunk.window_ids), windows):
            yield chunk.window_ids[first : first + windows], chunk.cosines[first : first + windows]


def _places(store: WindowStore, ids: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`desk.archive.rescore_tables.Places` of ``ids``: each window's recording as a code (a scan chunk
    holds a few recordings; their names are made once, not once a window)."""
    table = store.windows(ids, EVENT_COLUMNS)
    recording = table["recording"].combine_chunks().dictionary_encode()
    place = {name: column_numpy(table[name]) for name in EVENT_COLUMNS if name != "recording"}
    return {**place, "recording": column_numpy(recording.indices), "recordings": np.asarray(
        recording.dictionary.to_pylist(), object)}


def _meta(store: WindowStore, ids: np.ndarray) -> dict[str, np.ndarray]:
    table = store.windows(ids, EVENT_COLUMNS)
    return {name: column_numpy(table[name]) for name in table.column_names}


def _scan(store: WindowStore, queries: np.ndarray, where: WindowFilter, options: RescoreOptions) -> Iterator[Scored]:
    """The exact scan, here or as a Ray Data job over the store's files (the same chunks, the same cosines)."""
    if options.engine == "local":
        return store.scan(queries, where)
    from desk.archive.ray_scan import scan_on_ray, stall_seconds

    return scan_on_ray(store.files(where), queries, options.ray_address, stall_seconds(options.ray_stall_s))


def _stream_scans(store: WindowStore, streams: list[WindowFilter], queries: np.ndarray,
                  options: RescoreOptions) -> Iterator[tuple[int, Scored]]:
    """(place in ``streams``, a chunk of its scan): stream after stream, each in window order — here, or as one
    Ray Data job over the streams' files in that order (the same chunks, the same cosines)."""
    if options.engine == "local":
        for place, stream in enumerate(streams):
            for chunk in store.scan(queries, stream):
                yield place, chunk
        return
    from desk.archive.ray_scan import scans_on_ray, stall_seconds

    files = [(place, stored) for place, stream in enumerate(streams) for stored in store.files(stream)]
    for file, chunk in scans_on_ray([stored for _, stored in files], queries, options.ray_address,
                                    stall_seconds(options.ray_stall_s)):
        yield files[file][0], chunk


def rescore(db_path: Path | Sequence[Path], bundle_dir: Path, labels_path: Path, out_dir: Path,
            options: RescoreOptions) -> RescoreResult:
    """Score every archived window of the bundle's embedding space against ``labels_path``; writes ``out_dir``.

    The installed confidence of the list (and of the heads) supplies per-label thresholds and ``p_correct`` as in
    ``analyze``/``run``; one fitted in another score mode is refused.
    """
    from desk.archive.ray_scan import check_engine

    check_engine(options.engine, options.ray_address, options.ray_stall_s)
    bundle = open_bundle(bundle_dir)
    listed = read_labels(labels_path)
    labels = LabelList(listed.names + options.extra_prompts, listed.scientific_names + ("",) * len(
        options.extra_prompts))
    label_set = label_set_for(bundle, labels, labels_path)
    for head in options.heads:
        label_set = label_set.with_head(load_head(bundle, head))
    # a head-replaced label is not held to the list's fit of its zero-shot scores
    replaced = [n for n, is_head in zip(label_set.names, label_set.head_mask) if is_head and n in listed.names]
    confidence = load_confidences(bundle, [listed.key, *map(head_key, options.heads)], replaced)
    check_score_mode(confidence, options.score_mode)
    scorer = Scorer(label_set, bundle.manifest.logit_scale, mode=options.score_mode)
    names = np.array(label_set.names, dtype=object)
    shown = np.array([n not in options.hidden_labels for n in label_set.names])
    band = (bundle.manifest.frontend.f_min, bundle.manifest.frontend.f_max)
    databases = [db_path] if isinstance(db_path, Path) else list(db_path)
    listened = sorted({day for db in databases for day in listened_days(db)}) if "occupancy" in options.formats \
        else []
    with open_store(db_path) as store:
        space = choose_space(store, bundle, options.space)
        units = ({str(r): str(u) for r, u in store.tally(("recording", "unit_id"), space.where)}
                 if "occupancy" in options.formats else {})
        tables = RescoreTables(out_dir, options.formats, dict(zip(labels.names, labels.scientific_names)), units,
                               listened)
        try:
            if options.rules is None:
                chunks = pieces(_scan(store, scorer.label_matrix, space.where, options), len(names), options.top_k)
                window_tables(chunks, lambda ids: _places(store, ids), scorer, names, shown, options, tables, band,
                              confidence, ROWS_PER_PIECE)
            else:
                rules = unit_rules(options, label_set.names, label_set.head_mask, confidence)
                _write_events(store, space.where, scorer, tables, band, names, shown, rules, options)
        finally:
            tables.close()
        return RescoreResult(tables.csv_path, space.windows, tables.rows, space.other)


def check_score_mode(confidence: Confidence | None, score_mode: str) -> None:
    """Refuse to apply a confidence fitted on scores of another mode (its thresholds mean other numbers)."""
    if confidence is not None and score_mode not in confidence.score_mode.split("/"):
        raise ConfigError(f"the installed confidence ({confidence.labels_key}) was fitted on {confidence.score_mode} "
                          f"scores, not --score-mode {score_mode}",
                          f"rescore with --score-mode {confidence.score_mode}, or review and fit confidence again "
                          "in this mode")


def unit_rules(options: RescoreOptions, names: tuple[str, ...], head_mask: np.ndarray,
               confidence: Confidence | None) -> DetectorOptions:
    """The detector rules a unit runs with: per label its configured threshold (in ``options.rules``), else the
    installed confidence's, else the head default for heads (as ``edge.ops.setup.build_daemon`` gives ``run``)."""
    from edge.scoring.heads import HEAD_THRESHOLD

    assert options.rules is not None
    per_label = {name: HEAD_THRESHOLD for name, head in zip(names, head_mask) if head}
    per_label.update(confidence.thresholds() if confidence else {})
    return replace(options.rules, per_label_enter={**per_label, **options.rules.per_label_enter})


def _write_events(store: WindowStore, where: WindowFilter, scorer: Scorer, tables: RescoreTables,
                  band: tuple[float, float], names: np.ndarray, shown: np.ndarray, rules: DetectorOptions,
                  options: RescoreOptions) -> None:
    """The unit's detector over each (unit, boot, stream) in sample order; a gap in the windows closes events.

    Streams are read chunk by chunk and the events closed in each chunk written before the next is read, so
    memory stays bounded however long a stream ran.
    """
    from edge.scoring.scorer import Scores

    streams = [replace(where, units=(unit,), boots=(boot,), streams=(stream,))
               for unit, boot, stream in store.tally(("unit_id", "boot_id", "stream"), where)]
    hidden = {str(n) for n, s in zip(names, shown) if not s}
    for _, chunks in groupby(_stream_scans(store, streams, scorer.label_matrix, options), key=lambda pair: pair[0]):
        detector = EventDetector(tuple(str(n) for n in names), rules)
        previous_end: int | None = None
        anchor: tuple[Any, int, int, str] | None = None
        for _, chunk in chunks:
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
