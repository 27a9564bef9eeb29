"""Labels whose sanitised names are equal (``.``, ``..``, ``_``; ``a/b`` and ``a_b``) through the real chain:
``run --input`` saves clips on the card, ``logs collect`` reads them, ``logs report --clips`` shows them. Every
clip lands in a folder of its own label, and the report shows each clip under the label that made it (checked
in the data the page embeds, against each clip's GUANO label).

An older unit put all of ``.``, ``..`` and ``_`` in ``clips/_/``: such a card still collects and reports by the
clip's GUANO label, and where two labels detected at one moment shared the folder collect says so.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from edge.card.cardformat import CLIPS_DIR, safe_name, unique_name
from edge.card.guano import read_guano
from tests.faults.conftest import run_cli
from tests.tone_labels import store_tone_labels, write_tones

HOSTILE_LABELS = (".", "..", "_", "a/b", "a_b")
TONE_S = 15
RECORDING = "tones.wav"
SEASON_DATA = re.compile(r'<script id="season-data" type="application/json">(.*?)</script>', re.S)


def hostile_labels(bundle: Path, folder: Path) -> tuple[Path, Path]:
    """``bundle`` plus a label set of :data:`HOSTILE_LABELS` and a recording of five tones one after the other;
    returns (labels file, recording).

    ``.`` scores on tone 0, ``..`` on tones 0-1, ``_`` on tone 2, ``a/b`` on tone 3, ``a_b`` on tones 3-4: ``.``
    and ``..`` start at the same sample with different ends, so an older unit gave both one clip file name."""
    labels = store_tone_labels(bundle, HOSTILE_LABELS, [(0,), (0, 1), (2,), (3,), (3, 4)], folder)
    return labels, write_tones(folder / RECORDING, [(tone, TONE_S) for tone in range(5)])


def embedded_clips(report: Path) -> dict[str, list[dict[str, object]]]:
    found = SEASON_DATA.search(report.read_text(encoding="utf-8"))
    assert found, "the report embeds its data"
    return dict(json.loads(found.group(1))["clips"])


def guano_label(path: Path) -> str:
    return str(read_guano(path)["Species Auto ID"])


def collect_and_report(card: Path, out: Path) -> tuple[str, dict[str, list[dict[str, object]]]]:
    """``logs collect`` then ``logs report --clips``: (collect's output, the clips the report embeds by label)."""
    db = out / "season.duckdb"
    collected = run_cli("logs", "collect", card, "--into", db)
    assert collected.exit_code == 0, collected.output
    report = out / "report.html"
    reported = run_cli("logs", "report", "--db", db, "--out", report, "--clips")
    assert reported.exit_code == 0, reported.output
    return collected.output, embedded_clips(report)


def assert_attributed(shown: dict[str, list[dict[str, object]]], card: Path, labels: tuple[str, ...]) -> None:
    """Each label in ``labels`` shows a card clip, and every card clip shown under a label is that label's (its
    GUANO); a detection without one is shown from the recording the unit analysed."""
    owner = {p.name: guano_label(p) for p in (card / CLIPS_DIR).glob("*/*.wav")}
    for label in labels:
        assert any(c["source"] == "card clip" for c in shown.get(label, [])), f"a card clip shown for {label!r}"
    for label, clips in shown.items():
        for clip in clips:
            if clip["source"] == "card clip":
                assert owner[str(clip["file"])] == label, f"{clip['file']} shown under {label!r}"
            else:
                assert clip == {**clip, "source": "recording", "file": RECORDING}, clip


@pytest.fixture(scope="module")
def hostile_card(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    """A card from ``run --input`` with every hostile label detected and clipped."""
    root = tmp_path_factory.mktemp("hostile")
    bundle = Path(shutil.copytree(tiny_bundle, root / "bundle"))
    labels, recording = hostile_labels(bundle, root)
    card = root / "card"
    ran = run_cli("run", "--labels", labels, "--bundle", bundle, "--log-dir", card, "--input", recording,
                  "--fast", "--score-mode", "logit", "--threshold", "1.0", "--set", "unit.unit_id=hostile",
                  "--set", "storage.clips.mode=detections", "--set", "storage.clips.format=wav")
    assert ran.exit_code == 0, ran.output
    return card


def test_hostile_labels_get_a_clip_folder_each_and_the_report_attributes_every_clip(hostile_card: Path,
                                                                                     tmp_path: Path) -> None:
    clips = sorted((hostile_card / CLIPS_DIR).glob("*/*.wav"))
    by_label: dict[str, list[Path]] = {}
    for path in clips:
        by_label.setdefault(guano_label(path), []).append(path)
        assert path.parent.name == unique_name(guano_label(path)), path
    assert set(by_label) == set(HOSTILE_LABELS), f"every label made a clip: {sorted(by_label)}"
    assert len({p.parent for p in clips}) == len(HOSTILE_LABELS), "one folder per label, none shared"
    start = {label: read_guano(paths[0])["BIOL|Event Start Sample"] for label, paths in by_label.items()}
    assert start["."] == start[".."], "two labels once given one clip file name (their spans differ) start together"
    _, shown = collect_and_report(hostile_card, tmp_path)
    assert_attributed(shown, hostile_card, HOSTILE_LABELS)


def test_an_older_units_shared_clip_folders_still_report_by_guano_and_collect_names_the_clash(
        hostile_card: Path, tmp_path: Path) -> None:
    old = Path(shutil.copytree(hostile_card, tmp_path / "old-card"))
    clips = sorted((old / CLIPS_DIR).glob("*/*.wav"), key=lambda p: p.stat().st_mtime_ns)
    for path in clips:  # the older layout: clips/<safe_name(label)>/, the label part of the name likewise
        label = guano_label(path)
        folder = old / CLIPS_DIR / safe_name(label)
        folder.mkdir(exist_ok=True)
        path.replace(folder / path.name.replace(f"_{unique_name(label)}_", f"_{safe_name(label)}_"))
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    kept = {guano_label(p) for p in (old / CLIPS_DIR).glob("*/*.wav")}
    assert kept == set(HOSTILE_LABELS) - {"."}, "the older layout gave '.' and '..' one file: the later one stayed"
    output, shown = collect_and_report(old, tmp_path)
    text = " ".join(output.split())
    assert "shared by labels '..', '.'" in text, output
    assert_attributed(shown, old, tuple(sorted(kept)))
    assert {c["source"] for c in shown["."]} == {"recording"}, "'.' kept no clip on the older card"
