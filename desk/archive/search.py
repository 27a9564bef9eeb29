"""``logs search``: rank archived windows by cosine to a text query or an example recording.

The ranking is the archive's own (:meth:`desk.archive.windows.WindowStore.nearest`): by default the index's
candidates re-ranked exactly (:mod:`desk.archive.ivf`; an archive without an index is scanned), with ``--exact``
every window matching the unit and time filter scored, chunk by chunk, into a running top-K.
"""

from __future__ import annotations

import csv
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.spaces import choose_space
from desk.archive.windows import EVERY_WINDOW, WindowFilter, WindowStore, normalised, open_store, require_windows
from desk.collect.database import CollectError
from edge.batch.tables import RAVEN_SUFFIX, RavenTable, Selection, seconds
from edge.errors import AudioError, ConfigError
from edge.model.bundle import SPACE_PRECISION, Bundle

HITS_CSV = "hits.csv"
HITS_COLUMNS = ("rank", "score", "window_id", "unit_id", "start_utc", "end_utc", "recording", "start_s", "end_s",
                "source_path", "source_offset_s")
RAVEN_TABLE = "hits" + RAVEN_SUFFIX
"""The hits in ``analyze``'s Raven schema (Species: the query; Score: the cosine; one row per hit, in rank order)."""
log = logging.getLogger(__name__)

CLIPS_DIR = "clips"


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    """Cosine similarity to the query."""
    meta: dict[str, Any]


def search(db_path: Path | Sequence[Path], bundle: Bundle, query: np.ndarray, top: int,
           where: WindowFilter = EVERY_WINDOW, approximate: bool = True, space: str | None = None,
           engine: str = "local", ray_address: str | None = None, ray_stall_s: float | None = None) -> list[Hit]:
    """The ``top`` archived windows (of the bundle's embedding space, within ``where``) ranked by cosine to
    ``query``.

    ``approximate``: re-rank the index's candidates instead of scanning every window (filters stay exact).
    ``space``: the archive's space to search (needed when it holds several). A filter naming a unit the archive
    lacks, or a time range that ends before it starts, is an error listing what exists. ``engine`` ``ray``: the
    exact scan as a Ray job over the archive's files (on the cluster at ``ray_address``; failed after
    ``ray_stall_s`` without progress), the same hits.
    """
    if (engine, ray_address, ray_stall_s) != ("local", None, None):  # the Ray module only when Ray is asked for
        from desk.archive.ray_scan import check_engine

        check_engine(engine, ray_address, ray_stall_s)
    if engine == "ray" and approximate:
        raise ConfigError("--engine ray runs the exact search only", "add --exact (or leave --engine out to use the "
                                                                    "index here)")
    if top < 1:
        raise ConfigError(f"--top {top} must be at least 1", "ask for one or more hits")
    if where.since is not None and where.until is not None and where.since >= where.until:
        raise ConfigError(f"--from {where.since.isoformat()} is not before --to {where.until.isoformat()}",
                          "swap them, or widen the range")
    with open_store(db_path) as store:
        chosen = choose_space(store, bundle, space)
        check_units(store, where)
        vector = normalised(np.asarray(query, np.float32).reshape(1, -1))[0]
        within = replace(where, spaces=chosen.where.spaces)
        if engine == "ray":
            from desk.archive.ray_scan import nearest_on_ray, stall_seconds

            ids, scores = nearest_on_ray(store.files(within), vector, top, ray_address, stall_seconds(ray_stall_s))
        else:
            ids, scores = store.nearest(vector, top, within, approximate=approximate)
        meta = store.windows(ids).to_pylist()
    return [Hit(rank, float(score), row) for rank, (row, score) in enumerate(zip(meta, scores), start=1)]


def check_units(store: WindowStore, where: WindowFilter) -> None:
    """Refuse a unit filter naming a unit with no archived window, listing the units there are."""
    if where.units is None:
        return
    have = sorted(str(key[0]) for key in store.tally(("unit_id",)))
    unknown = [u for u in where.units if u not in have]
    if unknown:
        raise ConfigError(f"--unit {', '.join(unknown)}: no archived window of that unit (units: "
                          f"{', '.join(have) or 'none'})", "pass one of the units listed")


def dominant_model(db_path: Path | Sequence[Path], bundle: Bundle) -> tuple[str, int]:
    """(precision key, window length in samples): the bundle's ONNX model that computed most archived windows,
    else (windows of an engine or of a model file this bundle lacks) its fp32 model, whose space every precision
    shares (:func:`search` checks the archive's space)."""
    with open_store(db_path) as store:
        require_windows(store)
        by_sha = {str(key[0]): n for key, n in store.tally(("model_sha256",)).items()}
        lengths = store.tally(("samples",))
    ranked = sorted(((by_sha.get(bundle.manifest.files.get(m.path, ""), 0), key)
                     for key, m in bundle.manifest.models.items() if m.runtime == "onnxruntime"), reverse=True)
    if not ranked:
        raise CollectError(f"bundle {bundle.root} has no ONNX audio encoder to embed --example with",
                           "pass the bundle exported with `biolingual-export onnx`")
    precision = ranked[0][1] if ranked[0][0] else SPACE_PRECISION
    return precision, int(max(lengths, key=lambda key: lengths[key])[0])


def parse_example(spec: str) -> tuple[Path, float]:
    """``FILE[@START_S]`` -> (path, start in seconds)."""
    path, at, start = spec.rpartition("@")
    if at:
        try:
            return Path(path), float(start)
        except ValueError:
            pass
    return Path(spec), 0.0


def example_query(db_path: Path | Sequence[Path], bundle: Bundle, spec: str) -> np.ndarray:
    """The embedding of the archive-length window of ``FILE`` starting at ``START_S``, by the archive's model."""
    from edge.audio.files import read_file
    from edge.audio.windowing import Window
    from edge.model.backends import create_backend
    from edge.model.frontend_stream import StreamingLogMel

    path, start_s = parse_example(spec)
    precision, length = dominant_model(db_path, bundle)
    rate = bundle.manifest.frontend.sampling_rate
    audio = read_file(path, rate)
    first = round(start_s * rate)
    if not 0 <= first < len(audio):
        raise AudioError(f"--example {spec}: {start_s:g} s is outside the recording ({len(audio) / rate:.1f} s)",
                         "give a start time inside the file, e.g. FILE@12.5")
    features = StreamingLogMel(bundle.manifest.frontend).batch([Window(0, audio[first : first + length])])
    return np.asarray(create_backend(bundle, precision=precision).embed(features), np.float32)[0]


def text_query(bundle: Bundle, text: str, checkpoint: Path | None) -> np.ndarray:
    """The text embedding of ``text``: the bundle's text encoder, else the checkpoint (``export`` extra).

    A text encoder the bundle has is used or refused (another checkpoint's, a mismatched tokenizer): never
    passed over in silence."""
    if "fp32" in bundle.manifest.text_encoders:
        try:
            from edge.scoring.text_encoder import TextEncoder

            encoder = TextEncoder.from_bundle(bundle)
        except ImportError as e:  # its runtime (tokenizers) is not installed: the checkpoint may stand in
            if checkpoint is None:
                raise ConfigError(f"the text encoder of bundle {bundle.root} needs the text extra ({e})",
                                  "pip install 'biolingual-edge[text]', or pass --model CHECKPOINT") from e
        else:
            return np.asarray(encoder.embed([text]), np.float32)[0]
    elif checkpoint is None:
        raise ConfigError(f"bundle {bundle.root} has no text encoder for --text",
                          "add the text tower to the bundle, or pass --model CHECKPOINT (needs the export extra)")
    try:  # imported by name: the desk never depends on the workstation package at type-check or install time
        checkpoints = importlib.import_module("export.checkpoint")
        labels = importlib.import_module("export.labels")
    except ImportError as e:
        raise ConfigError("--model needs the export extra (torch, transformers)",
                          "pip install 'biolingual-edge[export]'") from e
    from edge.scoring.labels import LabelList

    model = checkpoints.load_checkpoint(str(checkpoint))
    if model.revision != bundle.manifest.model_revision:
        raise ConfigError(f"--model {checkpoint} is checkpoint {model.revision}, bundle {bundle.root} was exported "
                          f"from {bundle.manifest.model_id} at {bundle.manifest.model_revision} (another text space)",
                          "pass the checkpoint the bundle was exported from, or add its text tower to the bundle")
    return np.asarray(labels.text_embeddings(model, LabelList((text,), ("",)), ("{common}",))[0], np.float32)


def write_hits(hits: list[Hit], out_dir: Path, bundle: Bundle, clips: bool, query: str = "search hit") -> \
        list[Path]:
    """``hits.csv``, a Raven table with file offsets, and with ``clips`` each hit's audio where the file exists."""
    out_dir.mkdir(parents=True, exist_ok=True)
    band = (bundle.manifest.frontend.f_min, bundle.manifest.frontend.f_max)
    written = [out_dir / HITS_CSV, out_dir / RAVEN_TABLE]
    raven = RavenTable(written[1])
    with open(written[0], "w", newline="", encoding="utf-8") as table:
        rows = csv.writer(table)
        rows.writerow(HITS_COLUMNS)
        for hit in hits:
            m, rate = hit.meta, int(hit.meta["sample_rate"])
            offset = "" if m["source_offset"] is None else seconds(int(m["source_offset"]), rate)
            start_utc = _iso(m["start_utc"])
            rows.writerow([hit.rank, f"{hit.score:.6f}", m["window_id"], m["unit_id"], start_utc, _iso(m["end_utc"]),
                           m["recording"], seconds(int(m["start"]), rate), seconds(int(m["stop"]), rate),
                           m["source_path"] or "", offset])
            source = m["source_path"] or ""
            raven.write([Selection(int(m["start"]) / rate, int(m["stop"]) / rate, query, hit.score, band, rank=hit.rank,
                                   cosine=hit.score, begin_path=source, begin_file=Path(source).name if source else
                                   m["recording"], utc=m["start_utc"])])
    raven.close()
    if clips:
        written += _cut_clips(hits, out_dir / CLIPS_DIR, bundle.manifest.frontend.sampling_rate)
    return written


def _iso(value: Any) -> str:
    return "" if value is None else value.replace(tzinfo=timezone.utc).isoformat()


def _cut_clips(hits: list[Hit], folder: Path, rate: int) -> list[Path]:
    """One WAV per hit whose recording is on disk (model rate, mono)."""
    import soundfile as sf

    from edge.audio.files import read_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    uncut = 0
    for hit in hits:
        source = hit.meta["source_path"]
        if source is None or not Path(source).is_file():
            uncut += 1
            continue
        audio = read_file(Path(source), rate)
        start = int(hit.meta["source_offset"])
        path = folder / f"{hit.rank:03d}_{Path(source).stem}_{start / rate:.1f}s.wav"
        sf.write(path, audio[start : start + int(hit.meta["stop"]) - int(hit.meta["start"])], rate)
        paths.append(path)
    if uncut:
        log.warning("%d of %d hit(s) have no recording on disk (a unit's live stream, or a file moved since): "
                    "no clip cut for them", uncut, len(hits))
    return paths
