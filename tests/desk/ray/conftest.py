"""Fixtures of the Ray tests: the two-node cluster (also with its workers held by the test hook), eight recordings,
and their collected archive."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
from tests.desk.ray.cluster import Cluster, hooked, started_cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with started_cluster() as found:
        yield found


@pytest.fixture
def held(tmp_path: Path) -> Path:
    """A folder where the cluster's workers mark each archive file or piece they start, and wait while ``hold`` is
    there (the test hook)."""
    folder = tmp_path / "held"
    folder.mkdir()
    return folder


@pytest.fixture
def holding_cluster(held: Path) -> Iterator[Cluster]:
    with started_cluster(hooked(dict(os.environ), BIOLINGUAL_TEST_HOLD_DIR=str(held))) as found:
        yield found


@pytest.fixture
def archive(tmp_path: Path, toad_in_night: Path) -> Path:
    """Eight 60 s recordings: 24 pieces of 20 s."""
    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(8):
        (folder / f"r{i}.wav").write_bytes(toad_in_night.read_bytes())
    return folder


@pytest.fixture
def season_db(tmp_path: Path, archive: Path, example_bundle: Path, example_labels: tuple[Path, Path]) -> Path:
    """The eight recordings analysed with --embeddings and collected: an archive of several files."""
    from desk.collect.ingest import collect

    analyze_paths([archive], example_labels[0], example_bundle, tmp_path / "analyzed",
                  AnalyzeOptions(embeddings_dir=tmp_path / "embeddings"), run=RunOptions(workers=1))
    db = tmp_path / "season.duckdb"
    collect([tmp_path / "embeddings"], db)
    return db

