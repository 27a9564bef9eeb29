"""``run.json`` next to ``detections.csv``: what produced these detections, so a table explains itself later.

Bundle and label file are identified by content (sha256), not by path: the same numbers reproduce the run.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge import __version__, durable
from edge.model.bundle import MANIFEST_NAME, Bundle, sha256_file
from edge.scoring.labels import LabelList

RUN_RECORD = "run.json"
RUN_RECORD_SCHEMA = 1
ALL_WINDOWS_NOTE = "no --threshold: the top-{k} label(s) of every window are written, whatever their score"


@dataclass(frozen=True)
class RunRecord:
    """Settings and identities of one ``analyze`` run (durations in seconds, rates in Hz)."""

    bundle: str
    bundle_sha256: str
    """sha256 of the bundle's manifest.json, which lists the sha256 of every file in it."""
    model_id: str
    model_sha256: str
    """sha256 of the encoder file that ran."""
    labels_file: str
    labels_file_sha256: str
    labels_key: str
    """Content hash of the parsed label list (the key of its embeddings in the bundle)."""
    labels: tuple[str, ...]
    precision: str
    score_mode: str
    threshold: float | None
    top_k: int
    window_s: float
    hop_s: float
    sample_rate: int
    raven_band_hz: tuple[float, float]
    files_ok: int
    files_failed: int
    detections: int
    note: str
    scoring: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Heads (name, file, sha256, labels), installed confidence (id, files, target, labels) and the thresholds
    applied per label (``global`` for the rest): see :func:`edge.stream.pipeline.scoring_provenance`."""
    tool_version: str = __version__
    python: str = platform.python_version()
    finished_utc: str = ""
    schema: int = RUN_RECORD_SCHEMA


def run_record(bundle: Bundle, precision: str, labels_path: Path, labels: LabelList, **settings: Any) -> RunRecord:
    """A :class:`RunRecord` for a run with ``bundle``/``labels``; ``settings`` are the remaining fields."""
    model = bundle.model(precision)
    threshold = settings.get("threshold")
    note = ALL_WINDOWS_NOTE.format(k=settings.get("top_k", 1)) if threshold is None else (
        f"labels scoring at least {threshold:g} ({settings.get('score_mode')} score), top-{settings.get('top_k')}")
    return RunRecord(bundle=str(bundle.root.resolve()), bundle_sha256=sha256_file(bundle.root / MANIFEST_NAME),
                     model_id=bundle.manifest.model_id, model_sha256=bundle.manifest.files.get(model.path, ""),
                     labels_file=str(labels_path.resolve()), labels_file_sha256=sha256_file(labels_path),
                     labels_key=labels.key, labels=labels.names, precision=precision, note=note,
                     finished_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), **settings)


def write_run_record(out_dir: Path, record: RunRecord) -> Path:
    """Write ``OUT/run.json`` atomically (a half-written record never replaces a whole one)."""
    path = out_dir / RUN_RECORD
    durable.atomic_write(path, (json.dumps(dataclasses.asdict(record), indent=2) + "\n").encode("utf-8"))
    return path
