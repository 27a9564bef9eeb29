"""The rows a failing card could not take reach the archive through ``logs collect``, as if they had been on it.

The unit is the real daemon (``run --input``, window embeddings on) of ``test_card_fails_mid_run``, on the FUSE
card that turns read-only half way through: the batch whose fsync failed stays on the card *and* goes to the
fallback file (and, so the overlap is certain, every row on the card is spilled into the file once more with the
unit's own writer). A tech copies the unit's fallback folder beside the card's log and collects; the archive then
holds exactly what the same run on a healthy card gives — detections, window counts and the embeddings
themselves — each row once, and collecting again (or naming the file again) adds nothing. A damaged line of the
fallback file costs that line only, and a file whose boot is on no collected card is still filed by its rows.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from desk.archive.windows import open_store
from desk.collect.database import connect, run
from desk.collect.ingest import collect
from edge.card.cardformat import DETECTIONS_DIR
from edge.card.embedformat import EMBEDDINGS_DIR, read_embedding_segment
from edge.card.reserve import FALLBACK_SUFFIX, spill
from edge.daemon.contract import EXIT_CARD_INCOMPLETE
from tests.faults.conftest import run_cli
from tests.faults.test_card_fails_mid_run import run as run_unit
from tests.faults.test_card_fails_mid_run import tone_unit  # noqa: F401  (the module's fixture, shared)
from tests.powercut.harness import power_switch

DETECTION_FIELDS = ("stream", "label", "start_sample", "end_sample", "peak_start_sample", "score", "cosine",
                    "windows")
"""What two runs of the same recording share (each run is its own boot, its stream anchored when it opened)."""


def archive(db: Path) -> tuple[list[tuple[Any, ...]], dict[tuple[int, int], np.ndarray]]:
    """(every detection, sorted; every window's embedding by (stream, start sample)) of a collected database."""
    con = connect(db, read_only=True)
    try:
        detections = sorted(run(con, f"SELECT {', '.join(DETECTION_FIELDS)} FROM detections"))
    finally:
        con.close()
    store = open_store(db)
    try:
        ids = store.match()
        meta = store.windows(ids, ("stream", "start_sample")).to_pydict()
        vectors = store.embeddings(ids)
    finally:
        store.close()
    keys = list(zip(meta["stream"], meta["start_sample"]))
    assert len(set(keys)) == len(keys), "a window archived twice"
    return detections, dict(zip(keys, vectors))


def spill_again(card: Path, folder: Path, boot: str) -> int:
    """Spill every detection and window embedding on ``card`` once more, with the unit's own writer (what a
    read-only card does to the batch it took but could not fsync, here for all of them); returns the rows."""
    rows: list[tuple[str, date, bytes]] = []
    for path in sorted((card / DETECTIONS_DIR).glob("*.csv*")):
        day = date.fromisoformat(path.name[:10])
        rows += [("detections", day, line) for line in path.read_bytes().splitlines(keepends=True)[1:]]
    header = b""
    for path in sorted((card / EMBEDDINGS_DIR).glob("*.emb*")):
        segment = read_embedding_segment(path)
        assert segment.header is not None and path.read_bytes().startswith(segment.header.encode())
        header = segment.header.encode()
        rows += [("embeddings", date.fromisoformat(path.name[:10]), record.tobytes()) for record in segment.records]
    _, spilled = spill(folder, boot, rows, {"embeddings": header})
    assert spilled == len(rows) and header
    return spilled


def total(added: dict[str, int]) -> int:
    return sum(n for table, n in added.items() if table != "indexed")


@pytest.fixture(scope="module")
def failed_unit(tone_unit: tuple[Path, Path, Path],  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same run on a healthy card and on one turning read-only: copies of both cards and the fallback folder."""
    bundle, labels, recording = tone_unit
    root = tmp_path_factory.mktemp("unwritten")
    with power_switch(root / "mnt") as switch:
        switch.arm(1 << 30, "lazy", 0)  # no cut: only counts the card's write operations
        healthy = run_unit(switch.mountpoint / "healthy", root / "state-healthy", bundle, labels, recording)
        assert healthy.returncode == 0, healthy.stderr
        switch.fail(switch.operations() // 2, "EROFS")
        failed = run_unit(switch.mountpoint / "card", root / "state", bundle, labels, recording)
        assert failed.returncode == EXIT_CARD_INCOMPLETE, failed.stderr
        shutil.copytree(switch.mountpoint / "healthy", root / "healthy")
        shutil.copytree(switch.mountpoint / "card", root / "card")
    (fallback,) = (root / "state").glob(f"*{FALLBACK_SUFFIX}")
    return {"healthy": root / "healthy", "card": root / "card", "state": root / "state", "fallback": fallback}


def test_a_failed_card_and_its_fallback_file_collect_to_the_healthy_runs_archive(
        failed_unit: dict[str, Path], tmp_path: Path) -> None:
    collect([failed_unit["healthy"]], tmp_path / "healthy.duckdb")
    expected_detections, expected_windows = archive(tmp_path / "healthy.duckdb")
    card_only = collect([failed_unit["card"]], tmp_path / "card-only.duckdb")
    assert card_only.added["detections"] < len(expected_detections), "the card alone lacks the rows it refused"

    card = tmp_path / "SD1"  # the tech copies the unit's fallback folder beside the card's log
    shutil.copytree(failed_unit["card"], card)
    shutil.copytree(failed_unit["state"], card / "unwritten")
    boot = failed_unit["fallback"].name.removesuffix(FALLBACK_SUFFIX)
    twice = spill_again(card, card / "unwritten", boot)  # rows on the card and in the file, for certain
    first = collect([card], tmp_path / "season.duckdb")
    detections, windows = archive(tmp_path / "season.duckdb")
    assert detections == expected_detections
    assert windows.keys() == expected_windows.keys()
    for key, vector in expected_windows.items():
        assert np.array_equal(windows[key], vector), f"window {key}: another embedding than the healthy run's"
    assert first.unwritten == 1 and first.added["windows"] == len(expected_windows)
    assert sum(first.read[k] - first.added[k] for k in ("detections", "windows")) >= twice
    assert not [f for f in first.findings if FALLBACK_SUFFIX in f.message or f.check == "unit ids"], first.findings

    again = collect([card], tmp_path / "season.duckdb")
    assert total(again.added) == 0, again.added
    named = run_cli("logs", "collect", card, "--unwritten", failed_unit["fallback"], "--unwritten",
                    failed_unit["state"], "--into", tmp_path / "season.duckdb")
    assert "nothing new" in named.output and "2 fallback file(s)" in named.output, named.output
    after_detections, after_windows = archive(tmp_path / "season.duckdb")
    assert after_detections == detections and after_windows.keys() == windows.keys()


def test_a_damaged_line_costs_that_line_and_a_file_without_its_card_is_still_filed(
        failed_unit: dict[str, Path], tmp_path: Path) -> None:
    lines = failed_unit["fallback"].read_bytes().splitlines(keepends=True)
    kinds = [json.loads(line)["kind"] if b'"segment_header"' not in line else "header" for line in lines]
    spilled_detections, spilled_windows = kinds.count("detections"), kinds.count("embeddings")
    assert spilled_detections and spilled_windows
    broken = {kinds.index("detections"): b'{"kind": "detections", "day": "2024-05-01", "li\n',
              kinds.index("embeddings"): lines[kinds.index("embeddings")].replace(b'"base64": "', b'"base64": "AAAA')}
    damaged = tmp_path / "unwritten" / failed_unit["fallback"].name
    damaged.parent.mkdir()
    damaged.write_bytes(b"".join(broken.get(i, line) for i, line in enumerate(lines)))

    result = run_cli("logs", "collect", damaged, "--into", tmp_path / "season.duckdb")
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception), result.output
    detections, windows = archive(tmp_path / "season.duckdb")
    assert len(detections) == spilled_detections - 1 and len(windows) == spilled_windows - 1
    text = " ".join(result.output.split())
    for number in sorted(broken):
        assert f"{damaged}:{number + 1}: damaged line" in text, result.output
    assert text.count("damaged line") == len(broken), result.output
    assert "is on no collected card" in text, result.output

    again = collect([], tmp_path / "season.duckdb", unwritten=[damaged.parent])
    assert total(again.added) == 0, again.added


def test_rows_that_cannot_be_placed_are_one_error_naming_the_file(tmp_path: Path) -> None:
    header = b"BLEEMB\x00\x01" + b"\x02\x00\x00\x00{}"
    path, _ = spill(tmp_path / "state", "20240501T000000Z-abcdef",
                    [("embeddings", date(2024, 5, 1), b"\0" * 16), ("detections", date(2024, 5, 1), b"," * 13 + b"\n")],
                    {"embeddings": header})
    assert path is not None
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(line for line in lines if b"segment_header" not in line))
    result = run_cli("logs", "collect", tmp_path / "state", "--into", tmp_path / "season.duckdb")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert str(path) in " ".join(result.output.split()) and "no unit or boot" in result.output, result.output
