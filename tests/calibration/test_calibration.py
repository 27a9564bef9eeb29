"""Calibration windows: deterministic, stratified across files and loudness, stored keyed by input name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.dataset import INPUT_NAME, build_calibration_set, load_calibration_set
from calibration.errors import CalibrationError
from calibration.select import select_windows
from edge.model.bundle import open_bundle
from export.cli import app

runner = CliRunner()


def test_selection_is_deterministic_and_spans_files_and_loudness(tiny_bundle: Path,
                                                                 precision_audio: tuple[Path, Path]) -> None:
    params = open_bundle(tiny_bundle).manifest.frontend
    folder = precision_audio[0]
    first = select_windows([folder], params, 60, seed=3)
    again = select_windows([folder], params, 60, seed=3)
    other = select_windows([folder], params, 60, seed=4)
    assert [w.source for w in first] == [w.source for w in again]
    assert [w.source for w in first] != [w.source for w in other]
    readable_files = {p.name for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".mp3")}
    chosen_files = {Path(w.source.file).name for w in first}
    assert len(chosen_files) >= len(readable_files) - 2  # every readable file contributes (MP3s may not decode)
    chorus = next(Path(w.source.file) for w in first if w.source.file.endswith("1min.wav"))
    chosen = [w.source.rms_dbfs for w in first if w.source.file == str(chorus)]
    every_candidate = [w.source.rms_dbfs for w in select_windows([chorus], params, 10_000)]
    quietest_stratum, loudest_stratum = np.percentile(every_candidate, [100 / len(chosen), 100 - 100 / len(chosen)])
    assert min(chosen) <= quietest_stratum and max(chosen) >= loudest_stratum


def test_calibrate_cli_writes_npz_keyed_by_input_name(tiny_bundle: Path, precision_audio: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate", "--audio", str(precision_audio[0]), "--bundle", str(tiny_bundle),
                                 "--out", str(tmp_path), "--windows", "16", "--seed", "1"])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "calibration.npz") as archive:
        assert list(archive.keys()) == [INPUT_NAME]
        assert archive[INPUT_NAME].shape[1:] == (1, 1001, 64)
    data = load_calibration_set(tmp_path)
    feeds = list(data.feeds(batch=8))
    assert len(data) == 16 and [f[INPUT_NAME].shape[0] for f in feeds] == [8, 8]
    calibrate, held_out = data.split(4)
    assert len(calibrate) + len(held_out) == 16 and not set(held_out.sources) & set(calibrate.sources)


def test_folder_without_readable_audio_is_one_line_error(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.wav").write_text("not audio", encoding="utf-8")
    result = runner.invoke(app, ["calibrate", "--audio", str(tmp_path), "--bundle", str(tiny_bundle),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no readable audio" in result.output and "Traceback" not in result.output


def test_fewer_windows_than_the_batch_is_an_error(tiny_bundle: Path, precision_audio: tuple[Path, Path],
                                                  shared_audio: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate", "--audio", str(precision_audio[0]), "--bundle", str(tiny_bundle),
                                 "--out", str(tmp_path), "--windows", "4", "--batch", "8"])
    assert result.exit_code == 2 and "fewer than the batch" in result.output
    params = open_bundle(tiny_bundle).manifest.frontend
    one_short_clip = shared_audio / "nilomr__pykanto" / "20210502_040000.WAV"
    with pytest.raises(CalibrationError, match="fewer than the batch"):
        build_calibration_set([one_short_clip], params, count=8, batch=8)
