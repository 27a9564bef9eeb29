"""A card that fills up or turns read-only while the real daemon runs (``run --input``, window embeddings on).

The kernel will not remount a card read-only while files are open on it, so the card is the FUSE filesystem of
``tests.powercut`` switched to refuse changes from a chosen write on (``ENOSPC``: full, deleting still works;
``EROFS``: read-only); its free space still shows, so the storage governor does not see it coming (a card out
of inodes, or failing). The moment is a count of the card's own write operations: half of what the same run
does on a healthy card. Then:

* the run exits 6 (the documented card code) with one ``error:`` line naming the card, why, and a ``hint:``;
* the fallback file holds every detection and every window embedding that is not on the card (the run on a
  healthy card is the reference), and the embeddings read back with the card's own reader. A full card lets the
  writer cut a refused batch back off, so each row is on one side only; a read-only card does not, so a batch
  written but never fsync'd may be on the card and (as not confirmed) in the fallback too;
* nothing the card writer acknowledged before (fsync'd) is gone (the ledger of ``tests.powercut.acked_run``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desk.collect.cards import read_card
from edge.card.embedformat import EMBEDDINGS_DIR, read_embedding_segment
from edge.card.reserve import FALLBACK_SUFFIX
from edge.daemon.contract import EXIT_CARD_INCOMPLETE
from tests.powercut.harness import REPO, Ledger, power_switch
from tests.tone_labels import store_tone_labels, write_tones

if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine", allow_module_level=True)

RUN_TIMEOUT_S = 300
SEGMENT_S = 8.0
SEGMENTS = 8
"""Two labels on alternating tones: a detection every few seconds, all through the run."""
Detection = tuple[str, str]
"""(label, start sample)."""


def run(card: Path, state: Path, bundle: Path, labels: Path, recording: Path,
        journal: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``biolingual-edge run --input`` (under the ledger of ``acked_run`` when ``journal`` is given)."""
    program = ["-m", "tests.powercut.acked_run", str(journal)] if journal else ["-m", "edge"]
    command = [sys.executable, *program, "run", "--labels", str(labels), "--bundle", str(bundle),
               "--log-dir", str(card), "--input", str(recording), "--fast", "--window", "4", "--hop", "2",
               "--threshold", "1.0", "--score-mode", "logit", "--set", "unit.unit_id=full-unit",
               "--set", "storage.embeddings=fp16", "--set", "storage.clips.mode='off'",
               "--set", f"storage.fallback_dir={state}", "--set", "storage.governor.min_free_mb=0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)


def card_rows(card: Path) -> tuple[list[Detection], list[int]]:
    """Detections and window start samples on the card (open segments included)."""
    contents = read_card(card)
    columns = contents.detections.columns
    label, start = columns.index("label"), columns.index("start_sample")
    detections = [(str(row[label]), str(row[start])) for row in contents.detections.rows]
    windows = [int(r["start_sample"]) for path in sorted((card / EMBEDDINGS_DIR).glob("*.emb*"))
               for r in read_embedding_segment(path).records]
    return detections, windows


def fallback_rows(state: Path, tmp_path: Path) -> tuple[list[Detection], list[int]]:
    """Detections and window start samples in the fallback file; the windows read by the card's own reader."""
    (fallback,) = state.glob(f"*{FALLBACK_SUFFIX}")
    entries = [json.loads(line) for line in fallback.read_text(encoding="ascii").splitlines()]
    detections = []
    for entry in entries:
        if entry.get("kind") == "detections" and "line" in entry:
            fields = entry["line"].rstrip("\r\n").split(",")
            detections.append((fields[7], fields[10]))  # label, start_sample (DETECTION_COLUMNS)
    headers = [e for e in entries if "segment_header" in e]
    if not headers:
        return detections, []
    segment = tmp_path / "spilled.emb"
    segment.write_bytes(base64.b64decode(headers[0]["segment_header"])
                        + b"".join(base64.b64decode(e["base64"]) for e in entries if "base64" in e))
    read = read_embedding_segment(segment)
    assert not read.problems, read.problems
    return detections, [int(r["start_sample"]) for r in read.records]


@pytest.fixture(scope="module")
def tone_unit(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> tuple[Path, Path, Path]:
    """(bundle, labels file, recording): ``low`` and ``high`` on tones that alternate every few seconds."""
    root = tmp_path_factory.mktemp("tones")
    bundle = Path(shutil.copytree(tiny_bundle, root / "bundle"))
    labels = store_tone_labels(bundle, ("low", "high"), [(0,), (2,)], root)
    return bundle, labels, write_tones(root / "tones.wav", [(2 * (n % 2), SEGMENT_S) for n in range(SEGMENTS)])


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS"])
def test_a_card_failing_mid_run_exits_6_and_every_row_is_on_the_card_or_in_the_fallback(
        errno_name: str, tone_unit: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bundle, labels, recording = tone_unit
    with power_switch(tmp_path / "mnt") as switch:
        switch.arm(1 << 30, "lazy", 0)  # no cut: only counts the card's write operations
        healthy = run(switch.mountpoint / "healthy", tmp_path / "state-healthy", bundle, labels, recording)
        assert healthy.returncode == 0, healthy.stderr
        operations = switch.operations()
        expected_detections, expected_windows = card_rows(switch.mountpoint / "healthy")
        assert expected_detections and expected_windows

        card, state = switch.mountpoint / "card", tmp_path / "state"
        switch.fail(operations // 2, errno_name)
        failed = run(card, state, bundle, labels, recording, journal=tmp_path / "journal.jsonl")
        on_card = card_rows(card)
        losses = Ledger.replay([tmp_path / "journal.jsonl"]).losses(card)
    spilled = fallback_rows(state, tmp_path)

    assert failed.returncode == EXIT_CARD_INCOMPLETE, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    hints = [line for line in failed.stderr.splitlines() if line.startswith("hint:")]
    assert len(errors) == 1 and len(hints) == 1 and "Traceback" not in failed.stderr, failed.stderr
    why = "is full" if errno_name == "ENOSPC" else "is read-only"
    assert f"the card at {card} {why}" in errors[0] and str(state) in errors[0], errors[0]
    assert str(card) in hints[0] and ("free space" in hints[0] or "fsck" in hints[0]), hints[0]

    assert not losses, "an acknowledged (fsync'd) write is gone:\n" + "\n".join(losses)
    for name, card_part, fallback_part, expected in (
            ("detections", on_card[0], spilled[0], expected_detections),
            ("window embeddings", on_card[1], spilled[1], expected_windows)):
        assert card_part and fallback_part, f"the card failed mid-run: {name} on the card and in the fallback"
        assert len(set(card_part)) == len(card_part) and len(set(fallback_part)) == len(fallback_part), name
        assert set(card_part) | set(fallback_part) == set(expected), f"{name}: card + fallback = the healthy run"
        both = set(card_part) & set(fallback_part)
        if errno_name == "ENOSPC":  # a refused write is cut back off the card: each row is on one side only
            assert not both, f"{name} both on the card and in the fallback: {sorted(both)}"
        else:  # read-only: a batch written but not fsync'd cannot be cut back; it is kept in the fallback too
            assert len(both) <= len(expected) // SEGMENTS, f"{name} in both beyond one batch: {sorted(both)}"
