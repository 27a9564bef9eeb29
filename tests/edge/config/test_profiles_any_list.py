"""A shipped hardware profile works with the user's own species list: validation, prompts, hints, --set blame."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config.loader import profile_names, resolve_config
from edge.errors import ConfigError
from edge.model.bundle import open_bundle
from edge.scoring.label_sets import PROFILE_PROMPTS, embedded_names
from edge.scoring.labels import read_labels
from export.cli import app as export_app

REPO = Path(__file__).resolve().parents[3]
TOAD = "kitzeslab__opensoundscape/great_plains_toad.wav"
runner = CliRunner()


@pytest.fixture
def own_list(tmp_path: Path) -> Path:
    path = tmp_path / "my-list.txt"
    path.write_text("Spring Peeper\nWood Frog; Lithobates sylvaticus\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("profile", profile_names())
def test_every_profile_validates_with_any_label_list(profile: str, own_list: Path) -> None:
    config = resolve_config(None, profile, {"analysis.labels": str(own_list)})
    assert config.analysis.label_thresholds == {}
    assert {p.casefold() for p in config.analysis.background_prompts + config.analysis.privacy_prompts} <= {
        p.casefold() for p in PROFILE_PROMPTS}, "a profile uses a prompt that label exports do not store"


def test_a_bad_set_is_blamed_on_the_command_line_not_the_profile() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, "raspberry-pi-5", {"analysis.hop_s": 20})
    message = caught.value.message
    assert message.startswith("the settings given on the command line have 1 problem:")
    assert "analysis.hop_s: must be <= window_s (10)" in message
    assert "(set on the command line: analysis.hop_s=20)" in message
    assert "raspberry-pi-5.yaml" not in message and "--set" in caught.value.hint


def test_values_set_on_the_command_line_are_blamed_there(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, "raspberry-pi-5", {"analysis.labels": str(tmp_path / "missing.txt")})
    assert "set on the command line: analysis.labels=" in caught.value.message
    with pytest.raises(ConfigError) as file_caught:
        resolve_config(None, "raspberry-pi-5", {"analysis.label_thresholds": {"Nope": 3.0}})
    assert "label_thresholds.Nope" in file_caught.value.message  # a dict replaces the profile's, so it is ours
    assert "set on the command line: analysis.label_thresholds=" in file_caught.value.message


def test_config_show_writes_the_path_the_user_set(tmp_path: Path, own_list: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown = runner.invoke(app, ["config", "show", "--profile", "raspberry-pi-5", "--set",
                                f"analysis.labels={own_list}"])
    assert shown.exit_code == 0, shown.output
    assert f"  labels: {own_list} " in shown.stdout
    relative = runner.invoke(app, ["config", "show", "--profile", "raspberry-pi-5", "--set",
                                   "analysis.labels=my-list.txt"])
    assert "  labels: my-list.txt " in relative.stdout
    assert "label_thresholds: {}" in relative.stdout and "e.g. {American Bullfrog: 14.0}" in relative.stdout


def test_profile_and_own_list_run_after_one_label_export(tmp_path: Path, bundle_copy: Path, tiny_checkpoint: Path,
                                                         own_list: Path, shared_audio: Path) -> None:
    exported = runner.invoke(export_app, ["labels", "--model", str(tiny_checkpoint), "--bundle", str(bundle_copy),
                                          "--labels", str(own_list)])
    assert exported.exit_code == 0, exported.output
    assert "the hardware profiles' prompts (wind noise, rain, human speech) stored" in exported.output
    assert {p.casefold() for p in PROFILE_PROMPTS} <= embedded_names(open_bundle(bundle_copy))
    card = tmp_path / "card"
    for profile in ("raspberry-pi-4", "raspberry-pi-5"):
        ran = runner.invoke(app, ["run", "--profile", profile, "--labels", str(own_list), "--bundle",
                                  str(bundle_copy), "--log-dir", str(card / profile), "--precision", "fp32",
                                  "--input", str(shared_audio / TOAD), "--fast", "--threshold", "0"])
        assert ran.exit_code == 0, ran.output
        assert "window(s) analysed" in ran.output
    again = runner.invoke(export_app, ["labels", "--model", str(tiny_checkpoint), "--bundle", str(bundle_copy),
                                       "--labels", str(own_list)])
    assert again.exit_code == 0 and "prompts" not in again.output  # stored once, not per list


def test_labels_add_covers_the_profile_prompts_too(tmp_path: Path, text_bundle: Path, own_list: Path) -> None:
    bundle = Path(shutil.copytree(text_bundle, tmp_path / "bundle"))
    added = runner.invoke(app, ["labels", "add", "--bundle", str(bundle), "--labels", str(own_list)])
    assert added.exit_code == 0, added.output
    names = embedded_names(open_bundle(bundle))
    assert {p.casefold() for p in PROFILE_PROMPTS} | {n.casefold() for n in read_labels(own_list).names} <= names


def test_a_custom_prompt_hint_is_a_command_that_fixes_it_from_any_folder(
        tmp_path: Path, bundle_copy: Path, tiny_checkpoint: Path, own_list: Path, shared_audio: Path) -> None:
    assert runner.invoke(export_app, ["labels", "--model", str(tiny_checkpoint), "--bundle", str(bundle_copy),
                                      "--labels", str(own_list)]).exit_code == 0
    (tmp_path / "card").mkdir()
    unit = tmp_path / "unit.yaml"
    unit.write_text(f"model:\n  bundle: {bundle_copy}\nanalysis:\n  labels: {own_list}\n  threshold: 0\n"
                    f"  background_prompts: [traffic, dog barking]\nstorage:\n  log_dir: {tmp_path / 'card'}\n",
                    encoding="utf-8")
    args = ["run", "--config", str(unit), "--input", str(shared_audio / TOAD), "--fast"]
    failed = runner.invoke(app, args)
    assert failed.exit_code != 0 and "'traffic', 'dog barking'" in failed.output
    hint = failed.output.split("hint: run `", 1)[1].split("` on the workstation", 1)[0]
    assert str(tiny_checkpoint) in hint and str(bundle_copy) in hint  # absolute: works from any folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fixed = subprocess.run(hint, shell=True, cwd=elsewhere, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert fixed.returncode == 0, fixed.stderr
    assert runner.invoke(app, args).exit_code == 0


def test_a_local_checkpoint_path_that_does_not_exist_fails_at_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from export.checkpoint import load_checkpoint
    from export.errors import ExportError

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    for given in ("runs/ckpt", "./ckpt", str(tmp_path / "a" / "b")):
        with pytest.raises(ExportError) as caught:
            load_checkpoint(given)
        assert "does not exist" in caught.value.message and str(tmp_path) in caught.value.message
    assert time.monotonic() - started < 10  # no hub retries (31 s each before)


def test_a_local_checkpoint_is_recorded_by_its_absolute_path(tiny_bundle: Path, tiny_checkpoint: Path) -> None:
    from export.checkpoint import local_folder

    assert open_bundle(tiny_bundle).manifest.model_id == str(tiny_checkpoint.resolve())
    assert local_folder(os.path.relpath(tiny_checkpoint)) == tiny_checkpoint.resolve()
    assert local_folder("davidrrobinson/BioLingual") is None
