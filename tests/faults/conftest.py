"""Fixtures of the fault-injection suite: one season archive per embedding space, and one holding both.

Every command that mixes windows, label sets, confidence fits or heads has its mismatched-space case in
``test_spaces.py``; every fault a command must survive loudly (a dead worker, a read-only card at stop, a damaged
input) has its case in the ``test_*`` module of its kind here. A new command adds its cases here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from edge.cli import app


def run_cli(*args: str) -> Result:
    """The CLI in-process; the result's ``output`` holds stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result: Result, *wanted: str) -> str:
    """Assert a one-line refusal (``error:`` + ``hint:``, non-zero exit, no traceback) naming every ``wanted``."""
    text = " ".join(result.output.split())
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "error:" in text and "hint:" in text, result.output
    for word in wanted:
        assert word in text, (word, result.output)
    return text


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """Another tiny checkpoint (other weights: another embedding space and text space)."""
    from export.synthetic import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("other_checkpoint"), "tiny", seed=1)


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory, other_checkpoint: Path, example_labels: tuple[Path, Path],
                 shared_audio: Path) -> Path:
    """A bundle of another checkpoint (another embedding space) with the same example labels."""
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels
    from export.checkpoint import load_checkpoint
    from export.labels import example_embeddings, store_label_set
    from export.onnx_bundle import export_fp32_bundle

    checkpoint = other_checkpoint
    out = tmp_path_factory.mktemp("other_bundle") / "bundle"
    export_fp32_bundle(load_checkpoint(str(checkpoint)), out, shared_audio)
    labels_path, examples = example_labels
    bundle = open_bundle(out)
    labels = read_labels(labels_path)
    store_label_set(bundle, labels, example_embeddings(bundle, labels, examples), "examples", ())
    return out


@pytest.fixture(scope="session")
def spaces_season(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path, other_bundle: Path,
                  example_labels: tuple[Path, Path], toad_in_night: Path) -> dict[str, Path]:
    """``one``: a database of the example bundle's windows; ``mixed``: those plus the other bundle's."""
    from desk.collect.ingest import collect
    from edge.batch.analyze import AnalyzeOptions, analyze_paths

    root = tmp_path_factory.mktemp("spaces")
    for name, bundle in (("a", example_bundle), ("b", other_bundle)):
        analyze_paths([toad_in_night], example_labels[0], bundle, root / f"analyze_{name}",
                      AnalyzeOptions(top_k=2, embeddings_dir=root / f"emb_{name}"))
    collect([root / "emb_a"], root / "one.duckdb")
    collect([root / "emb_a", root / "emb_b"], root / "mixed.duckdb")
    return {"one": root / "one.duckdb", "mixed": root / "mixed.duckdb", "emb_a": root / "emb_a", "root": root}


@pytest.fixture
def bundle_a(example_bundle: Path, tmp_path: Path) -> Path:
    """A writable copy of the example bundle (space A)."""
    return Path(shutil.copytree(example_bundle, tmp_path / "bundle_a"))

