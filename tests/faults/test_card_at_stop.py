"""A card that turns read-only or fills up just before stop, with window embeddings (binary rows) pending: the
card log closes without raising (so the daemon records exit 6, see ``Daemon.run``), and every row that missed
the card lands in the fallback file, embeddings included, decodable with their segment header.

(A running daemon's card cannot be remounted read-only here: the kernel refuses while its segments are open.)
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.embeddings import EmbeddingSpec
from edge.card.embedformat import dequantise, read_embedding_segment
from edge.card.governor import StoragePolicy
from edge.card.reserve import FALLBACK_SUFFIX
from tests.cardlog_support import HOP, RATE, T0, WINDOW, event_at, fill_up, small_filesystem

DIM = 16
WINDOWS = 40


def read_only(card: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(card)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(params=["read-only", "full"])
def failing_card(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with small_filesystem(tmp_path / "card", "2m") as card:
        yield card, request.param


def test_rows_pending_at_stop_spill_to_the_fallback_embeddings_included(failing_card: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    card, how = failing_card
    state = tmp_path / "state"
    policy = StoragePolicy(stop_clips_below_bytes=0, thin_clips_below_bytes=0, stop_embeddings_below_bytes=0,
                           reserve_bytes=0, fallback_dir=state)
    log = CardLog(card, UnitIdentity("AM-01", "marsh"), RATE, {"config_hash": "x"}, policy,
                  embeddings=EmbeddingSpec("fp16", DIM, "a" * 64, "b" * 64))
    log.open_stream(T0, 0, "ntp")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((WINDOWS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(WINDOWS):
        log.detections([event_at(i * HOP, "toad")])
        log.effort(i * HOP, i * HOP + WINDOW)
        log.embeddings([i * HOP], [i * HOP + WINDOW], vectors[i : i + 1])
    read_only(card) if how == "read-only" else fill_up(card)
    not_on_card = log.settle(0.2, retry_s=0.05)
    log.close()  # must not raise: the daemon then records exit 6
    assert not_on_card["detections"] == WINDOWS and not_on_card["embeddings"] == WINDOWS
    (fallback,) = state.glob(f"*{FALLBACK_SUFFIX}")
    entries = [json.loads(line) for line in fallback.read_text(encoding="ascii").splitlines()]
    detections = [e for e in entries if e["kind"] == "detections"]
    assert len(detections) == WINDOWS and all("toad" in e["line"] for e in detections)
    (header,) = [e for e in entries if "segment_header" in e]
    blobs = b"".join(base64.b64decode(e["base64"]) for e in entries if "base64" in e)
    segment_file = tmp_path / "spilled.emb"
    segment_file.write_bytes(base64.b64decode(header["segment_header"]) + blobs)
    segment = read_embedding_segment(segment_file)  # the spilled windows read back with the card's own reader
    assert not segment.problems and segment.header is not None and segment.header.embedding_space == "b" * 64
    np.testing.assert_array_equal(segment.records["start_sample"], np.arange(WINDOWS) * HOP)
    np.testing.assert_allclose(dequantise(segment.records), vectors, atol=1e-3)

