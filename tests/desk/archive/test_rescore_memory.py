"""``logs rescore`` streams: a long label list with a large ``--top-k`` never holds all its output rows."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from desk.archive import rescore as rescore_module
from desk.archive.rescore import RescoreOptions, rescore
from desk.archive.windows import WindowBatch, open_store
from edge.model.bundle import (
    FrontendParams,
    LabelSetEntry,
    Manifest,
    ModelEntry,
    TensorSpec,
    sha256_file,
    write_manifest,
)
from edge.scoring.labels import parse_labels

RATE = 48_000
DIM = 512
WINDOWS = 300
LABELS = 300
ROWS_PER_PIECE = 3_000
"""The module's bound (200 000 rows) scaled to this test's 90 000 output rows."""
MAX_TRACED_MB = 12
"""Peak Python/numpy allocation of the whole rescore; holding its 90 000 output rows at once takes more."""


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def synthetic_bundle(folder: Path, labels: int) -> tuple[Path, Path, str]:
    """A bundle whose label set is ``labels`` random unit vectors (the audio model is never run, only hashed)."""
    folder.mkdir(parents=True)
    model = folder / "audio_encoder.fp32.onnx"
    model.write_bytes(b"synthetic model for the rescore memory test")
    text = "\n".join(f"species {i:04d}" for i in range(labels))
    label_file = folder.parent / "labels.txt"
    label_file.write_text(text + "\n", encoding="utf-8")
    listed = parse_labels(text)
    (folder / "labels").mkdir()
    np.savez(folder / "labels" / f"{listed.key}.npz", embeddings=unit_rows(labels, 1))
    entry = ModelEntry(model.name, "fp32", "onnxruntime", (TensorSpec("input_features", ("batch", 1, 1001, 64),
                                                                      "float32"),),
                       (TensorSpec("audio_embeds", ("batch", DIM), "float32"),))
    write_manifest(folder, Manifest("synthetic", "0", FrontendParams(RATE, 1024, 480, 64, 50.0, 14_000.0, 10), DIM,
                                    100.0, models={"fp32": entry},
                                    label_sets={listed.key: LabelSetEntry(listed.key, f"labels/{listed.key}.npz",
                                                                          listed.names, "text")}))
    return folder, label_file, sha256_file(model)


def test_rescore_of_every_label_at_a_large_top_k_streams_its_rows(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, labels, space = synthetic_bundle(tmp_path / "bundle", LABELS)
    db = tmp_path / "season.duckdb"
    starts = np.arange(WINDOWS, dtype=np.int64) * 5 * RATE
    with open_store(db, writable=True) as store:
        store.insert(WindowBatch("a.emb", "marsh-01", "marsh", "boot-1", RATE, space, None, "/cards/marsh-01",
                                 np.zeros(WINDOWS, np.int32), starts, starts + 10 * RATE,
                                 1_714_000_000_000_000 + starts * 1_000_000 // RATE, ["ntp"] * WINDOWS,
                                 unit_rows(WINDOWS, 2).astype(np.float16)))
    monkeypatch.setattr(rescore_module, "ROWS_PER_PIECE", ROWS_PER_PIECE)
    monkeypatch.setattr(rescore_module, "CELLS_PER_PIECE", ROWS_PER_PIECE * 10)
    tracemalloc.start()
    try:
        result = rescore(db, bundle, labels, tmp_path / "out", RescoreOptions(top_k=LABELS, formats=("csv",)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.rows == WINDOWS * LABELS
    assert peak < MAX_TRACED_MB * 2**20, f"peak {peak / 2**20:.0f} MB"
    with open(tmp_path / "out" / "detections.csv", newline="", encoding="utf-8") as handle:
        table = csv.DictReader(handle)
        first = [next(table) for _ in range(LABELS)]
    assert [int(row["rank"]) for row in first] == list(range(1, LABELS + 1))
    assert len({row["label"] for row in first}) == LABELS and len({row["start_s"] for row in first}) == 1
