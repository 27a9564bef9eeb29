"""Windows of another dimension than the archive holds for their embedding space: ``logs collect`` refuses that
segment with one error line (the rest of the card is still taken, collect exits 1), so a later ``rescore`` or
``review`` never meets an ONNX Runtime "MatMul dimension mismatch"; a reader's wrong-size query is one line too.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from desk.archive.store import DuckShardStore
from desk.archive.windows import WindowShapeError
from desk.collect.embeddings import window_batch
from edge.card.cardformat import CLOCK_SYNC_STATES
from edge.card.embedformat import EMBEDDINGS_DIR, EXTENSION, encode_records, read_embedding_segment
from tests.faults.conftest import run_cli


def copy_segment(source: Path, target: Path, boot_id: str, dim: int) -> None:
    """``source``'s windows as a segment of boot ``boot_id`` whose vectors are ``dim``-dimensional."""
    segment = read_embedding_segment(source)
    assert segment.header is not None and len(segment.records)
    records = segment.records
    header = dataclasses.replace(segment.header, boot_id=boot_id, dim=dim)
    vectors = np.resize(records["vector"].astype(np.float32), (len(records), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    body = b"".join(encode_records(header, int(records["stream"][i]), CLOCK_SYNC_STATES[records["clock_sync"][i]],
                                   records["start_sample"][i : i + 1], records["end_sample"][i : i + 1],
                                   records["start_utc_us"][i : i + 1], vectors[i : i + 1])
                    for i in range(len(records)))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(header.encode() + body)


@pytest.fixture
def season(spaces_season: dict[str, Path], tmp_path: Path) -> tuple[Path, Path, int]:
    """A database of the example bundle's windows (a copy) and one of its segments, and their dimension."""
    db = tmp_path / "season.duckdb"
    shutil.copy(spaces_season["one"], db)
    shutil.copytree(spaces_season["root"] / "one.archive", tmp_path / "season.archive")
    source = sorted((spaces_season["emb_a"] / EMBEDDINGS_DIR).glob(f"*.{EXTENSION}"))[0]
    header = read_embedding_segment(source).header
    assert header is not None
    return db, source, header.dim


def test_collect_refuses_a_segment_of_another_dimension_and_keeps_the_rest(
        season: tuple[Path, Path, int], example_bundle: Path, example_labels: tuple[Path, Path],
        tmp_path: Path) -> None:
    db, source, dim = season
    card = tmp_path / "card_other_model"
    copy_segment(source, card / EMBEDDINGS_DIR / f"a_good.{EXTENSION}", "boot-good", dim)
    copy_segment(source, card / EMBEDDINGS_DIR / f"b_wide.{EXTENSION}", "boot-wide", dim + 8)
    with DuckShardStore(db) as store:
        before = store.count()
    result = run_cli("logs", "collect", card, "--into", db)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"b_wide.{EXTENSION}" in errors[0] and str(card.name) in text, result.output
    assert f"{dim + 8}-dimensional" in text and f"{dim}-dimensional" in text and "own database" in text
    with DuckShardStore(db) as store:  # the good segment of the same card was archived, the wide one not
        boots = {key[0] for key in store.tally(("boot_id",))}
        assert store.count() == before + len(read_embedding_segment(source).records)
        assert "boot-good" in boots and "boot-wide" not in boots
    rescored = run_cli("logs", "rescore", "--db", db, "--bundle", example_bundle, "--labels", example_labels[0],
                       "--out", tmp_path / "rescored")
    assert rescored.exit_code == 0, rescored.output
    again = run_cli("logs", "collect", card, "--into", db)  # the refused segment is refused again, never half-taken
    assert again.exit_code == 1 and f"{dim + 8}-dimensional" in " ".join(again.output.split()), again.output


def test_insert_refuses_vectors_that_are_not_a_float_matrix(season: tuple[Path, Path, int]) -> None:
    db, source, _ = season
    batch = dataclasses.replace(window_batch(read_embedding_segment(source), "flat.emb", "card_x"),
                                boot_id="boot-flat")
    with DuckShardStore(db, writable=True) as store:
        before = store.count()
        for vectors in (batch.vectors.reshape(-1), batch.vectors.astype(np.int16)):
            with pytest.raises(WindowShapeError, match="card_x: segment flat.emb.*not a"):
                store.insert(dataclasses.replace(batch, vectors=vectors))
        assert store.count() == before


def test_a_query_of_another_dimension_is_one_error(season: tuple[Path, Path, int]) -> None:
    db, _, dim = season
    with DuckShardStore(db) as store, pytest.raises(WindowShapeError, match=f"{dim}-dimensional windows") as caught:
        list(store.scan(np.ones((dim + 3, 2), np.float32)))
    assert "\n" not in caught.value.message and "bundle" in caught.value.hint
