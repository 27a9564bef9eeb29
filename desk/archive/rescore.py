"""``logs rescore``: every archived window against a new label list — a matrix product instead of re-analysis.

Output is what ``analyze`` writes (``detections.csv`` and one Raven table per recording or unit stream), made
by the same scorer and the same per-window selection, so on the same audio the two agree window for window
(scores within fp16 rounding). With a unit config the unit's detector rules run over each stream instead, so
the rows are the events a unit with that list would have logged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.rescore_tables import window_tables
from desk.archive.windows import WindowFilter, WindowStore, open_store, require_windows
from desk.collect.database import CollectError
from edge.batch.tables import CSV_COLUMNS, DETECTIONS_CSV, RAVEN_COLUMNS, RAVEN_SUFFIX, seconds
from edge.errors import EdgeError, LabelError
from edge.model.bundle import Bundle, open_bundle
from edge.scoring.confidence import load_confidences
from edge.scoring.labels import LabelList, read_labels
from edge.scoring.scorer import LabelSet, Scorer, load_label_set
from edge.stream.detector import DetectorOptions, EventDetector

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


@dataclass(frozen=True)
class RescoreResult:
    csv_path: Path
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


class TableWriter:
    """``detections.csv`` plus one Raven table per recording, appended to as rows arrive."""

    def __init__(self, out_dir: Path, low_hz: float, high_hz: float) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.path = out_dir / DETECTIONS_CSV
        self.band = (f"{low_hz:g}", f"{high_hz:g}")
        self._handle = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._csv = csv.writer(self._handle)
        self._csv.writerow(CSV_COLUMNS)
        self._tables: dict[str, tuple[Path, int]] = {}
        self.rows = 0

    def write(self, recording: str, rate: int, rows: list[tuple[int, int, str, float, float, int, Any]]) -> None:
        """Rows of one recording: (start, end samples, label, score, cosine, rank, start UTC or None)."""
        if not rows:
            return
        for start, end, label, score, cosine, rank, utc in rows:
            stamp = "" if utc is None else utc.replace(tzinfo=timezone.utc).isoformat()
            self._csv.writerow([recording, seconds(start, rate), seconds(end, rate), label, f"{score:.6g}",
                                f"{cosine:.6g}", rank, stamp, ""])  # p_correct: per-window confidence only
        self._raven(recording, rate, rows)
        self.rows += len(rows)

    def _raven(self, recording: str, rate: int, rows: list[tuple[int, int, str, float, float, int, Any]]) -> None:
        if recording not in self._tables:
            stem = Path(recording).stem if "/stream" not in recording else recording.replace("/", "_")
            name, counter = stem + RAVEN_SUFFIX, 2
            while any(p.name == name for p, _ in self._tables.values()):
                name, counter = f"{stem}_{counter}{RAVEN_SUFFIX}", counter + 1
            path = self.out_dir / name
            path.write_text("\t".join(RAVEN_COLUMNS) + "\n", encoding="utf-8")
            self._tables[recording] = (path, 0)
        path, number = self._tables[recording]
        begin_path = recording if "/stream" not in recording else ""  # a unit stream is no file
        with open(path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            for start, end, label, score, _, rank, _ in rows:
                number += 1
                writer.writerow([number, "Spectrogram 1", 1, seconds(start, rate), seconds(end, rate), *self.band,
                                 label, f"{score:.6g}", rank, begin_path])
        self._tables[recording] = (path, number)

    def close(self) -> None:
        self._handle.close()


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
    out_dir.mkdir(parents=True, exist_ok=True)
    frontend = bundle.manifest.frontend
    with open_store(db_path) as store:
        where, kept, other = model_filter(store, bundle)
        if options.rules is None:
            rows = window_tables(store, where, scorer, names, shown, options, out_dir,
                                 (frontend.f_min, frontend.f_max), load_confidences(bundle, [listed.key]))
            return RescoreResult(out_dir / DETECTIONS_CSV, kept, rows, other)
        writer = TableWriter(out_dir, frontend.f_min, frontend.f_max)
        try:
            _write_events(store, where, scorer, writer, names, shown, options.rules)
        finally:
            writer.close()
        return RescoreResult(writer.path, kept, writer.rows, other)


def _utc(value: Any) -> Any:
    if value is None or (isinstance(value, np.datetime64) and np.isnat(value)):
        return None
    if isinstance(value, np.datetime64):
        from datetime import datetime

        return datetime(1970, 1, 1) + timedelta(microseconds=int(value.astype("datetime64[us]").astype(np.int64)))
    return value


def _write_events(store: WindowStore, where: WindowFilter, scorer: Scorer, writer: TableWriter, names: np.ndarray,
                  shown: np.ndarray, rules: DetectorOptions) -> None:
    """The unit's detector over each (unit, boot, stream) in sample order; a gap in the windows closes events.

    Streams are read chunk by chunk, so memory stays bounded however long a stream ran.
    """
    from edge.scoring.scorer import Scores

    streams = store.tally(("unit_id", "boot_id", "stream"), where)
    hidden = {str(n) for n, s in zip(names, shown) if not s}
    for unit, boot, stream in streams:
        detector = EventDetector(tuple(str(n) for n in names), rules)
        previous_end: int | None = None
        anchor: tuple[Any, int, int, str] | None = None
        events = []
        one_stream = replace(where, units=(unit,), boots=(boot,), streams=(stream,))
        for chunk in store.scan(scorer.label_matrix, one_stream):
            scores = scorer.from_cosine(chunk.cosines)
            meta = _meta(store, chunk.window_ids)
            if anchor is None:
                anchor = (_utc(meta["start_utc"][0]), int(meta["start"][0]), int(meta["sample_rate"][0]),
                          str(meta["recording"][0]))
            for i in range(len(chunk.window_ids)):
                start, end = int(meta["start"][i]), int(meta["stop"][i])
                if previous_end is not None and start > previous_end:
                    events += detector.flush()
                events += detector.update([start], [end], Scores(scores.cosine[i : i + 1], scores.score[i : i + 1]))
                previous_end = end
        events += detector.flush()
        if anchor is None:
            continue
        first_utc, first_start, rate, recording = anchor
        events.sort(key=lambda e: (e.start_sample, e.label))
        rows = [(e.start_sample, e.end_sample, e.label, e.peak_score, e.peak_cosine, 1,
                 None if first_utc is None else first_utc + timedelta(seconds=(e.start_sample - first_start) / rate))
                for e in events if e.label not in hidden]
        writer.write(recording, rate, rows)
