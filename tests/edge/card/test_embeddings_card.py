"""Window embeddings on the card: written by ``run``, torn tails tolerated, int8 faithful, governor pauses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.embeddings import EmbeddingSpec
from edge.card.embedformat import EMBEDDINGS_DIR, dequantise, read_embedding_segment, record_bytes
from edge.card.governor import StoragePolicy
from edge.model.bundle import open_bundle
from tests.cardlog_support import HOP, RATE, T0, WINDOW

REPO = Path(__file__).resolve().parents[3]
DIM = 16


def run_unit(bundle: Path, labels: Path, recording: Path, card: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "edge", "run", "--labels", str(labels), "--bundle", str(bundle),
               "--log-dir", str(card), "--input", str(recording), "--fast", "--threshold", "0.5",
               "--heartbeat", "3600", "--set", "unit.unit_id=emb-unit", *extra]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def segments(card: Path) -> list[Path]:
    return sorted((card / EMBEDDINGS_DIR).glob("*.emb*"))


def test_run_keeps_every_analysed_window_with_the_model_hash(example_bundle: Path, example_labels: tuple[Path, Path],
                                                             toad_in_night: Path, tmp_path: Path) -> None:
    run_unit(example_bundle, example_labels[0], toad_in_night, tmp_path)
    paths = segments(tmp_path)
    assert len(paths) == 1 and paths[0].suffix == ".emb"  # sealed by rename at close
    segment = read_embedding_segment(paths[0])
    assert not segment.notes and not segment.problems
    assert segment.header is not None and segment.header.unit_id == "emb-unit"
    bundle = open_bundle(example_bundle)
    assert segment.header.model_sha256 == bundle.manifest.files[bundle.model("fp32").path]
    starts = segment.records["start_sample"].tolist()
    assert starts == list(range(0, 50 * RATE + 1, HOP))  # 60 s at a 5 s hop: 11 windows
    assert (segment.records["end_sample"] - segment.records["start_sample"] == WINDOW).all()
    norms = np.linalg.norm(dequantise(segment.records), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)


def test_storage_embeddings_off_writes_none(example_bundle: Path, example_labels: tuple[Path, Path],
                                            toad_in_night: Path, tmp_path: Path) -> None:
    run_unit(example_bundle, example_labels[0], toad_in_night, tmp_path, "--set", "storage.embeddings=off")
    assert segments(tmp_path) == [] and (tmp_path / "detections").is_dir()


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write_log(card: Path, dtype: str, vectors: np.ndarray, policy: StoragePolicy | None = None) -> CardLog:
    log = CardLog(card, UnitIdentity("AM-01", "marsh"), RATE, {}, policy,
                  embeddings=EmbeddingSpec(dtype, DIM, "ab" * 32), wall_clock=lambda: T0)
    log.open_stream(T0, 0, "ntp")
    for index in range(0, len(vectors), 4):
        starts = [i * HOP for i in range(index, min(index + 4, len(vectors)))]
        log.embeddings(starts, [s + WINDOW for s in starts], vectors[index : index + 4])
        log.flush()
    return log


def test_a_torn_tail_is_noted_and_a_damaged_record_reported(tmp_path: Path) -> None:
    vectors = unit_vectors(10)
    write_log(tmp_path, "fp16", vectors)  # not closed: the power was cut, the segment is still .part
    (path,) = segments(tmp_path)
    assert path.name.endswith(".emb.part")
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - record_bytes(DIM, "fp16") // 2)  # the last record only half on the card
    torn = read_embedding_segment(path)
    assert len(torn.records) == 9 and "torn last record" in torn.notes[0] and not torn.problems
    np.testing.assert_allclose(dequantise(torn.records), vectors[:9], atol=1e-3)
    data = bytearray(path.read_bytes())
    data[len(data) - 3 * record_bytes(DIM, "fp16")] ^= 0xFF  # flipped bits inside a whole record
    path.write_bytes(bytes(data))
    damaged = read_embedding_segment(path)
    assert len(damaged.records) == 8 and "fail their CRC" in damaged.problems[0]


def test_int8_keeps_the_direction(tmp_path: Path) -> None:
    vectors = unit_vectors(32, seed=1)
    write_log(tmp_path, "int8", vectors).close()
    (path,) = segments(tmp_path)
    restored = dequantise(read_embedding_segment(path).records)
    cosine = (restored * vectors).sum(axis=1) / np.linalg.norm(restored, axis=1)
    assert cosine.min() > 0.999


@pytest.mark.parametrize("free_enough", [True, False])
def test_governor_pauses_embeddings_before_detections(tmp_path: Path, free_enough: bool) -> None:
    limit = 0 if free_enough else 1 << 62  # more free space than any disk has: embeddings must stop
    log = write_log(tmp_path, "fp16", unit_vectors(8), StoragePolicy(stop_embeddings_below_bytes=limit))
    log.close()
    written = sum(len(read_embedding_segment(p).records) for p in segments(tmp_path))
    events = (tmp_path / "events").glob("*.jsonl")
    paused = any("embeddings_paused" in p.read_text() for p in events)
    assert (written, paused) == ((8, False) if free_enough else (0, True))
