"""``logs export --format hoplite``: the archive's windows as a perch-hoplite database, for Perch's agile modeling.

The folder written is what perch-hoplite's ``SQLiteUSearchDB`` opens (release :data:`HOPLITE_RELEASE`):
``hoplite.sqlite`` (its tables ``hoplite_metadata``, ``deployments``, ``recordings``, ``windows``,
``annotations``, created with its own DDL) and ``usearch.index`` (a usearch HNSW index, inner product, float16,
keyed by window id). It is written with plain ``sqlite3`` and usearch, not through hoplite: hoplite's PyPI
package pins pandas < 3 and pulls Jupyter, and its database code needs absl-py < 2 and ml-collections < 0.2, none
of which the desk should carry. A test opens every export with hoplite's own loader and search.

Mapping: a unit is a hoplite *deployment* (``name`` = unit id, ``project`` = ``--project``); a recording
analysed on disk is a *recording* named by its absolute path, a unit's stream (no audio file: the unit keeps only
clips) is ``unit/boot/streamN``; ``datetime`` is the recording's UTC start; window ``offsets`` are seconds into
the recording; window ids are the archive's own. Embeddings are the archive's unit-length float16 vectors, so
hoplite's ``dot`` score is our cosine. ``review.csv`` verdicts become *annotations* (yes → positive, no →
negative, unsure → uncertain) on the reviewed window's span, with a provenance naming biolingual-edge, the
reviewer and the time the verdicts were saved.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.archive.many import ID_BITS
from edge import __version__, durable
from edge.errors import ConfigError

if TYPE_CHECKING:
    from desk.review.reviewed import Reviewed

HOPLITE_RELEASE = "1.0.2"
"""The perch-hoplite release whose layout this writes (and whose loader the test opens it with)."""
SQLITE_NAME = "hoplite.sqlite"
INDEX_NAME = "usearch.index"
EXPANSION_ADD = 64
"""usearch's candidate list while building the HNSW graph. The export's time is this build, and CPU time grows with
it: on 100 000 windows of the season mixture 64 took 56 s of CPU at recall@10 0.998, 128 took 129 s at 1.000, and
hoplite's default 256 about 2.4x that again (``benchmarks/hoplite_export.py``, BENCHMARKS.md). Recorded in the
metadata, so hoplite adds its own windows with it too."""
EXPANSION_SEARCH = 128
"""usearch's candidate list per query (hoplite's default)."""
CHUNK = 20_000
"""Windows read from the archive and written at a time."""
VECTORS_NAME = ".vectors.f16"
"""The float16 vectors the index is built on, beside it while it is built (removed before the export is renamed into
place): usearch adds them without copying (``copy=False``) and saves them from there, so they are file pages the
kernel may write back and drop, not heap. The heap holds the HNSW graph (~0.15 KB a window) and one chunk."""
SCHEMA = (
    "CREATE TABLE hoplite_metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE deployments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, project TEXT NOT NULL,
       latitude REAL, longitude REAL, UNIQUE (name, project))""",
    """CREATE TABLE recordings (id INTEGER PRIMARY KEY AUTOINCREMENT, filename TEXT NOT NULL, datetime TEXT,
       deployment_id INTEGER REFERENCES deployments(id) ON DELETE CASCADE, UNIQUE (id, deployment_id),
       UNIQUE (filename, deployment_id))""",
    """CREATE TABLE windows (id INTEGER PRIMARY KEY AUTOINCREMENT,
       recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE, offsets FLOAT_LIST NOT NULL,
       UNIQUE (id, recording_id, offsets))""",
    """CREATE TABLE annotations (id INTEGER PRIMARY KEY AUTOINCREMENT,
       recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE, offsets FLOAT_LIST NOT NULL,
       label TEXT NOT NULL, label_type INTEGER NOT NULL, provenance TEXT NOT NULL,
       UNIQUE (id, recording_id, offsets))""",
    "CREATE INDEX idx_annotations ON annotations(recording_id, offsets, label, label_type, provenance)",
    "CREATE INDEX idx_labels ON annotations(label, label_type, provenance)",
    "CREATE INDEX idx_recordings_deployment_id ON recordings(deployment_id)",
    "CREATE INDEX idx_windows_recording_id ON windows(recording_id)",
    # our columns hoplite has no field for; it reads extra columns back as attributes of its records
    "ALTER TABLE recordings ADD COLUMN sample_rate INTEGER",
    "ALTER TABLE recordings ADD COLUMN season TEXT",
    "ALTER TABLE windows ADD COLUMN boot_id TEXT",
    "ALTER TABLE windows ADD COLUMN stream INTEGER",
    "ALTER TABLE windows ADD COLUMN start_sample INTEGER",
    "ALTER TABLE windows ADD COLUMN start_utc TEXT",
    "ALTER TABLE windows ADD COLUMN clock_sync TEXT",
    "ALTER TABLE annotations ADD COLUMN score REAL",
    "ALTER TABLE annotations ADD COLUMN review_file TEXT",
)
"""perch-hoplite's tables and indexes (``SQLiteUSearchDB._setup_tables``), then our extra columns."""
LABEL_TYPES = {"no": 0, "yes": 1, "unsure": 2}
"""review.csv verdict -> hoplite ``LabelType`` (NEGATIVE, POSITIVE, UNCERTAIN)."""
COLUMNS = ("window_id", "unit_id", "boot_id", "stream", "start_sample", "sample_rate", "start_utc", "clock_sync",
           "recording", "start", "stop")


@dataclass(frozen=True)
class HopliteExport:
    """What an export wrote."""

    path: Path
    windows: int
    deployments: int
    recordings: int
    annotations: int
    space: str


def export_hoplite(dbs: Path | Sequence[Path], out: Path, reviews: list[Path], project: str | None = None,
                   reviewer: str | None = None, space: str | None = None) -> HopliteExport:
    """Write the windows of archive ``dbs`` (one database, or several read as one: window ids translated as
    :class:`desk.archive.many.ManyStores` translates them; one embedding space) and the verdicts of ``reviews``
    into the new perch-hoplite database folder ``out``; written beside it, fsync'd and renamed into place when
    complete (a crash leaves no half export under ``out``)."""
    from desk.archive.windows import WindowFilter, open_store, require_windows
    from desk.collect.seasons import distinct
    from desk.review.reviewed import locate_reviewed, read_reviewed

    databases = distinct([dbs] if isinstance(dbs, Path) else dbs)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder",
                          "pass a new folder for the hoplite database (an export is never merged into another)")
    verdicts = [read_reviewed(path) for path in reviews]
    temp = out.with_name(f"{durable.TEMP_PREFIX}{out.name}")
    _remove(temp)
    durable.make_dirs(temp)
    try:
        with open_store(databases) as store:
            require_windows(store)
            key = _space(store.spaces(), space)
            located = [locate_reviewed(store, rows, path, len(databases) > 1) for path, rows in zip(reviews, verdicts)]
            ids = store.match(WindowFilter(spaces=(key,)))
            writer = _Writer(temp, project or "+".join(p.stem for p in databases), databases,
                             {int(i) for found in located for i in found}, len(ids))
            for first in range(0, len(ids), CHUNK):
                chunk = ids[first:first + CHUNK]
                writer.add_windows(store.windows(chunk, COLUMNS).to_pylist(), store.embeddings(chunk))
            for review, rows, found in zip(reviews, verdicts, located):
                writer.add_verdicts(review, rows, found, reviewer)
            result = writer.finish(key)
        for written in (temp / SQLITE_NAME, temp / INDEX_NAME, temp):
            durable.fsync_path(written)
        _remove(out)
        temp.rename(out)
        durable.fsync_path(out.parent)
    except BaseException:
        _remove(temp)
        raise
    return HopliteExport(out, *result, space=key)


class _Writer:
    """Fills one hoplite database folder: the SQLite tables and the usearch index."""

    def __init__(self, folder: Path, project: str, databases: list[Path], reviewed: set[int], total: int) -> None:
        self.folder = folder
        self.total = total
        self.project = project
        self.databases = databases
        self.reviewed = reviewed
        self.con = sqlite3.connect(folder / SQLITE_NAME)
        self.con.execute("PRAGMA journal_mode = WAL")  # as hoplite opens its databases
        for statement in SCHEMA:
            self.con.execute(statement)
        self.deployments: dict[str, int] = {}
        self.recordings: dict[tuple[str, str], int] = {}
        self.starts: dict[int, datetime] = {}
        self.spans: dict[int, tuple[int, float, float, str]] = {}
        """Reviewed window id -> (recording id, start s, stop s, unit)."""
        self.index: Any = None
        self.vectors: Any = None
        """The index's float16 vectors (a memory-mapped file of ``total`` rows), made with the index."""
        self.windows = 0
        self.annotations = 0

    def add_windows(self, rows: list[dict[str, Any]], vectors: np.ndarray) -> None:
        """One chunk of windows (metadata rows of :data:`COLUMNS` and their unit vectors), of the ``total`` the
        writer was made for."""
        from usearch.index import Index, MetricKind, ScalarKind

        if self.index is None:
            self.dim = vectors.shape[1]
            self.index = Index(ndim=self.dim, metric=MetricKind.IP, dtype=ScalarKind.F16,
                               expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
            self.vectors = np.memmap(self.folder / VECTORS_NAME, np.float16, "w+", shape=(self.total, self.dim))
        values = []
        for row in rows:
            recording = self._recording(row)
            rate = row["sample_rate"]
            start_s, stop_s = row["start"] / rate, row["stop"] / rate
            utc = row["start_utc"]
            if utc is not None:
                begun = utc.replace(tzinfo=timezone.utc) - timedelta(microseconds=row["start"] * 1_000_000 // rate)
                self.starts[recording] = min(begun, self.starts.get(recording, begun))
            values.append((row["window_id"], recording, _offsets(start_s, stop_s), row["boot_id"], row["stream"],
                           row["start_sample"], None if utc is None else _iso(utc), row["clock_sync"]))
            if row["window_id"] in self.reviewed:
                self.spans[row["window_id"]] = (recording, start_s, stop_s, row["unit_id"])
        self.con.executemany("""INSERT INTO windows (id, recording_id, offsets, boot_id, stream, start_sample,
                                start_utc, clock_sync) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""", values)
        kept = self.vectors[self.windows:self.windows + len(rows)]
        kept[:] = vectors  # the index points into these rows (no copy): they live until it is saved
        self.index.add(np.array([r["window_id"] for r in rows], dtype=np.uint64), kept, copy=False)
        self.windows += len(rows)

    def _recording(self, row: dict[str, Any]) -> int:
        unit = row["unit_id"]
        if unit not in self.deployments:
            self.deployments[unit] = self.con.execute(
                "INSERT INTO deployments (name, project) VALUES (?, ?)", (unit, self.project)).lastrowid or 0
        key = (unit, row["recording"])
        if key not in self.recordings:
            self.recordings[key] = self.con.execute(
                "INSERT INTO recordings (filename, deployment_id, sample_rate, season) VALUES (?, ?, ?, ?)",
                (row["recording"], self.deployments[unit], row["sample_rate"],
                 str(self.databases[row["window_id"] >> ID_BITS]))).lastrowid or 0
        return self.recordings[key]

    def add_verdicts(self, review: Path, rows: list[Reviewed], found: np.ndarray, reviewer: str | None) -> None:
        """The verdicts of one review file as annotations on the spans of their windows (``found``: their ids in
        the export); each must be an exported window (of the exported embedding space)."""
        saved = datetime.fromtimestamp(review.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        provenance = f"biolingual-edge review; reviewer={reviewer or 'unnamed'}; saved={saved}"
        values = []
        for row, window in zip(rows, found.tolist()):
            if window not in self.spans:
                raise ConfigError(f"{review} line {row.line}: window {row.key or row.window_id} is not in the export "
                                  "(of another embedding space)", "export that space with --space, or leave "
                                  "this review out")
            recording, start_s, stop_s, _ = self.spans[window]
            values.append((recording, _offsets(start_s, stop_s), row.label, LABEL_TYPES[row.verdict], provenance,
                           row.score, review.name))
        self.con.executemany("""INSERT INTO annotations (recording_id, offsets, label, label_type, provenance,
                                score, review_file) VALUES (?, ?, ?, ?, ?, ?, ?)""", values)
        self.annotations += len(values)

    def finish(self, space: str) -> tuple[int, int, int, int]:
        """Recording start times, metadata, commit, the index saved; (windows, deployments, recordings,
        annotations)."""
        self.con.executemany("UPDATE recordings SET datetime = ? WHERE id = ?",
                             [(when.isoformat(), rid) for rid, when in self.starts.items()])
        metadata = {
            "usearch_config": {"embedding_dim": self.dim, "dtype": "float16", "metric_name": "IP",
                               "expansion_add": EXPANSION_ADD, "expansion_search": EXPANSION_SEARCH},
            "model_config": {"model_key": "biolingual_edge", "embedding_dim": self.dim,
                             "model_config": {"embedding_space": space}},
            "biolingual_edge": {"archives": [str(p) for p in self.databases], "embedding_space": space,
                                "version": __version__,
                                "exported_utc": _iso(datetime.now(timezone.utc)), "hoplite_layout": HOPLITE_RELEASE,
                                "windows": self.windows},
        }
        self.con.executemany("INSERT INTO hoplite_metadata (key, value) VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in metadata.items()])
        self.con.commit()
        self.con.close()
        self.index.save(str(self.folder / INDEX_NAME))
        self.index = self.vectors = None  # the index first: it points into the vectors
        (self.folder / VECTORS_NAME).unlink()
        return self.windows, len(self.deployments), len(self.recordings), self.annotations


def _space(counts: dict[str, int], chosen: str | None) -> str:
    """The one embedding-space key to export (``chosen``: a prefix of it)."""
    from edge.model.space import short_space

    listing = ", ".join(f"{short_space(k)} ({n} windows)" for k, n in sorted(counts.items(), key=lambda i: -i[1]))
    keys = [k for k in counts if chosen is None or k.startswith(chosen.lower())]
    if chosen is not None and len(keys) != 1:
        raise ConfigError(f"--space {chosen!r} matches {len(keys)} of the archive's embedding spaces: {listing}",
                          "pass a unique prefix of one of them")
    if len(keys) > 1:
        raise ConfigError(f"the archive holds windows of {len(keys)} embedding spaces: {listing}",
                          "a hoplite database holds one: export each with --space PREFIX into its own folder")
    return keys[0]


def _offsets(start_s: float, stop_s: float) -> bytes:
    """hoplite's ``FLOAT_LIST``: little-endian float64 values."""
    return np.array([start_s, stop_s], dtype="<f8").tobytes()


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
