"""`analyze` outputs that explain themselves: run.json, Raven `Begin Path`, start times from the recorder,
no stale tables on re-runs, cut-short and macOS-twin files on a real card folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import soundfile as sf
from typer.testing import CliRunner

from edge.batch.tables import AUDACITY_SUFFIX, RAVEN_COLUMNS, RAVEN_SUFFIX
from edge.cli import app
from edge.model.bundle import sha256_file
from edge.scoring.labels import read_labels
from tests.conftest import TOAD

runner = CliRunner()
PYKANTO = "nilomr__pykanto/20210502_040000.WAV"


def card_folder(root: Path, shared_audio: Path) -> Path:
    """An AudioMoth card copied from a Mac: local-time names, UTC+1 comments, `._` twins, one cut-short file."""
    card = root / "card"
    card.mkdir()
    audio, rate = sf.read(shared_audio / PYKANTO, dtype="float32")
    with sf.SoundFile(card / "20240903_202615.WAV", "w", rate, 1, "PCM_16") as handle:
        handle.comment = "Recorded at 20:26:15 03/09/2024 (UTC+1) by AudioMoth 24F3190361DA6B7D at gain 2"
        handle.write(audio)
    (card / "._20240903_202615.WAV").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 80)
    whole = (shared_audio / PYKANTO).read_bytes()
    (card / "20240903_210000.WAV").write_bytes(whole[: len(whole) * 3 // 4])
    return card


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "detections.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_outputs_explain_themselves(example_bundle: Path, example_labels: tuple[Path, Path], shared_audio: Path,
                                    tmp_path: Path) -> None:
    card = card_folder(tmp_path, shared_audio)
    labels = example_labels[0]
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(card), "--labels", str(labels), "--bundle", str(example_bundle),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "every window" in result.output  # no --threshold: says what was written
    assert "warning:" in result.output and "20240903_210000.WAV is truncated" in result.output

    found = rows(out)
    files = {Path(r["file"]).name for r in found}
    assert files == {"20240903_202615.WAV", "20240903_210000.WAV"}  # the `._` twin is not a recording
    first = next(r for r in found if r["file"].endswith("202615.WAV"))
    assert first["start_utc"] == "2024-09-03T19:26:15+00:00"  # from the comment, the +1 h offset applied

    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["bundle_sha256"] == sha256_file(example_bundle / "manifest.json")
    assert record["labels_file_sha256"] == sha256_file(labels)
    assert record["labels_key"] == read_labels(labels).key
    assert (record["precision"], record["score_mode"], record["threshold"]) == ("fp32", "logit", None)
    assert (record["window_s"], record["hop_s"], record["top_k"]) == (10.0, 5.0, 1)
    assert record["tool_version"] and record["files_ok"] == 2 and record["detections"] == len(found)
    assert "every window" in record["note"]

    raven = (out / ("20240903_202615" + RAVEN_SUFFIX)).read_text(encoding="utf-8").splitlines()
    header, first_row = raven[0].split("\t"), dict(zip(raven[0].split("\t"), raven[1].split("\t")))
    assert header == list(RAVEN_COLUMNS)
    assert first_row["Begin Path"] == str((card / "20240903_202615.WAV").resolve())
    assert first_row["Begin File"] == "20240903_202615.WAV" and first_row["Low Freq (Hz)"].endswith(".0")
    assert first_row["Begin Date Time (UTC)"] == "2024/09/03 19:26:15.000"


def test_rerun_into_the_same_folder_leaves_no_stale_tables(example_bundle: Path, example_labels: tuple[Path, Path],
                                                            shared_audio: Path, tmp_path: Path) -> None:
    card = card_folder(tmp_path, shared_audio)
    out = tmp_path / "out"
    args = ["--labels", str(example_labels[0]), "--bundle", str(example_bundle), "--out", str(out)]
    assert runner.invoke(app, ["analyze", str(card), *args]).exit_code == 0
    assert len(list(out.glob("*" + RAVEN_SUFFIX))) == 2
    (out / "my-notes.txt").write_text("kept")
    only = card / "20240903_202615.WAV"
    assert runner.invoke(app, ["analyze", str(only), *args, "--threshold", "-1000"]).exit_code == 0
    assert [p.name for p in out.glob("*" + RAVEN_SUFFIX)] == ["20240903_202615" + RAVEN_SUFFIX]
    assert {Path(r["file"]).name for r in rows(out)} == {only.name}
    assert (out / "my-notes.txt").read_text() == "kept"
    assert json.loads((out / "run.json").read_text())["threshold"] == -1000
    shutil.rmtree(card)


def test_recordings_sharing_a_name_get_their_own_tables_in_every_format(
        example_bundle: Path, example_labels: tuple[Path, Path], shared_audio: Path, tmp_path: Path) -> None:
    """``a/x.wav`` and ``b/x.wav`` once shared a table name; now the second's name carries a hash of its path."""
    import crowsetta

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.wav").symlink_to(shared_audio / TOAD)
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(tmp_path / "a"), str(tmp_path / "b"), "--labels",
                                 str(example_labels[0]), "--bundle", str(example_bundle), "--out", str(out),
                                 "--format", "raven,audacity"])
    assert result.exit_code == 0, result.output
    assert not (out / "detections.csv").exists()  # not asked for
    tables = sorted(out.glob("*" + RAVEN_SUFFIX), key=lambda p: len(p.name))
    assert [p.name for p in tables][0] == "x" + RAVEN_SUFFIX and len(tables) == 2
    begin_paths = []
    for table in tables:
        loaded = crowsetta.formats.by_name("raven").from_file(table, annot_col="Species")
        begin_paths.append(set(loaded.df["Begin Path"]))
        box = loaded.to_bbox()[0]
        assert [box.low_freq, box.high_freq] == json.loads((out / "run.json").read_text())["raven_band_hz"]
        track = crowsetta.formats.by_name("aud-seq").from_file(table.with_name(
            table.name.replace(RAVEN_SUFFIX, AUDACITY_SUFFIX)))
        assert len(track.labels) == len(loaded.df) and track.end_times[0] == loaded.to_bbox()[0].offset
    assert begin_paths == [{str(tmp_path / "a" / "x.wav")}, {str(tmp_path / "b" / "x.wav")}]  # links, not target
