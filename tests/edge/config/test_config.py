"""Unit configs: every shipped profile validates; broken configs give every problem at once, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edge.cli import app
from edge.config.loader import profile_names, profile_path, resolve_config
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
PROFILE_FILES = sorted((REPO / "firmware_configs").glob("*.yaml"))
EXPECTED_PROFILES = {"jetson-orin-nano", "jetson-orin-nx", "jetson-xavier-nx", "raspberry-pi-5", "raspberry-pi-4",
                     "generic-x86"}
LABELS = REPO / "firmware_configs" / "labels" / "north-america-example.txt"
runner = CliRunner()


def test_the_promised_profiles_are_shipped() -> None:
    assert set(profile_names()) >= EXPECTED_PROFILES
    assert {p.stem for p in PROFILE_FILES} == set(profile_names())
    listed = runner.invoke(app, ["config", "profiles"])
    assert listed.stdout.split() == profile_names()


@pytest.mark.parametrize("path", PROFILE_FILES, ids=[p.stem for p in PROFILE_FILES])
def test_every_profile_validates(path: Path) -> None:
    config = resolve_config(path, None, {})
    assert config.analysis.labels.is_file()
    assert config.analysis.labels.is_relative_to(REPO / "firmware_configs")
    assert config.model.bundle.is_absolute() and config.storage.log_dir.is_absolute()
    assert config.storage.fallback_dir.is_absolute()
    assert not config.storage.fallback_dir.is_relative_to(config.storage.log_dir), "the fallback is off the card"
    assert config.audio.highpass_hz == 0, "the precision gates (calibration, verify, parity) run without a high-pass"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=[p.stem for p in PROFILE_FILES])
def test_every_profile_comments_every_key(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith(":") or stripped.startswith("- {"):
            continue  # section headers and list items explained on their parent line
        assert "#" in line, f"{path.name} line {number} has no comment for a technician: {line!r}"


def test_xavier_profile_says_what_works_there() -> None:
    text = (REPO / "firmware_configs" / "jetson-xavier-nx.yaml").read_text(encoding="utf-8")
    assert "opset 18" in text and "TensorRT 8.5" in text and "17" in text
    config = resolve_config(None, "jetson-xavier-nx", {})
    assert config.model.backend == "ort"


def write(tmp_path: Path, body: str, name: str = "unit.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    (tmp_path / "labels.txt").write_text("Great Plains Toad\nAmerican Bullfrog\n", encoding="utf-8")
    return path


VALID = "model:\n  bundle: bundle\nanalysis:\n  labels: labels.txt\n"

BROKEN = {
    "wrong type": ("analysis:\n  labels: labels.txt\n  hop_s: five\nmodel:\n  bundle: b\n",
                   ["analysis.hop_s: Input should be a valid number (got 'five')"]),
    "string for an integer": ("audio:\n  sample_rate: '48000'\n" + VALID,
                              ["audio.sample_rate: Input should be a valid integer (got '48000')"]),
    "unknown key": ("analysis:\n  labels: labels.txt\n  hop: 5\nmodel:\n  bundle: b\n",
                    ["analysis.hop: unknown key (did you mean 'hop_s'?)"]),
    "unknown section": ("analisys:\n  hop_s: 5\n" + VALID, ["analisys: unknown key (did you mean 'analysis'?)"]),
    "hop longer than window": ("analysis:\n  labels: labels.txt\n  window_s: 10\n  hop_s: 12\nmodel:\n  bundle: b\n",
                               ["analysis.hop_s: must be <= window_s (10)"]),
    "window longer than the model's": ("analysis:\n  labels: labels.txt\n  window_s: 12\nmodel:\n  bundle: b\n",
                                       ["analysis.window_s: Input should be less than or equal to 10"]),
    "missing labels file": ("analysis:\n  labels: nope.txt\nmodel:\n  bundle: b\n",
                            ["analysis.labels: labels file", "nope.txt does not exist"]),
    "threshold for an unknown label": ("analysis:\n  labels: labels.txt\n  label_thresholds: {Bullfrog: 3}\n"
                                       "model:\n  bundle: b\n",
                                       ["analysis.label_thresholds.Bullfrog: 'Bullfrog' is not in labels.txt"]),
    "missing section": ("analysis:\n  labels: labels.txt\n", ["model.bundle: required, not set"]),
    "missing key": ("analysis:\n  hop_s: 5\nmodel:\n  backend: ort\n",
                    ["model.bundle: required, not set", "analysis.labels: required, not set"]),
    "precision typo": ("model:\n  bundle: b\n  precision: [int9]\nanalysis:\n  labels: labels.txt\n",
                       ["model.precision[0]: Input should be 'fp32', 'fp16' or 'int8'"]),
    "bad time zone": ("schedule:\n  timezone: Europe/Berln\n" + VALID,
                      ["schedule.timezone: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"]),
    "empty daily period": ("schedule:\n  mode: daily\n  periods:\n    - {start: '06:00', end: '06:00'}\n" + VALID,
                           ["schedule.periods[0].end: equals start (06:00): the period would be empty"]),
    "unquoted sexagesimal time": ("schedule:\n  mode: daily\n  periods:\n    - {start: 5:30, end: '09:00'}\n" + VALID,
                                  ["schedule.periods[0].start: write times in quotes"]),
    "overlapping periods": ("schedule:\n  mode: daily\n  periods:\n    - {start: '05:00', end: '09:00'}\n"
                            "    - {start: '08:00', end: '10:00'}\n" + VALID,
                            ["schedule.periods[1]: overlaps period 0 (05:00-09:00)"]),
    "daily without periods": ("schedule:\n  mode: daily\n" + VALID, ["schedule.periods: required for mode: daily"]),
    "settings of another mode": ("schedule:\n  mode: always\n  duty: {on_min: 5, off_min: 5}\n" + VALID,
                                 ["schedule.duty: only used with mode: duty, but mode is always"]),
    "duty cycle longer than a day": ("schedule:\n  mode: duty\n  duty: {on_min: 1000, off_min: 500}\n" + VALID,
                                     ["schedule.duty.off_min: on_min + off_min = 1500 min is longer than a day"]),
    "duty never on": ("schedule:\n  mode: duty\n  duty: {on_min: 0, off_min: 30}\n" + VALID,
                      ["schedule.duty.on_min: Input should be greater than 0"]),
    "solar period ending before it starts": (
        "schedule:\n  mode: solar\n  solar:\n    latitude: 50\n    longitude: 8\n    periods:\n"
        "      - {start: sunrise+60, end: sunrise-30}\n" + VALID,
        ["schedule.solar.periods[0].end: 'sunrise-30' is not after 'sunrise+60'"]),
    "solar time typo": ("schedule:\n  mode: solar\n  solar:\n    latitude: 50\n    longitude: 8\n    periods:\n"
                        "      - {start: sunrize, end: sunset}\n" + VALID,
                        ["schedule.solar.periods[0].start: 'sunrize' is not a sun time"]),
    "latitude out of range": ("schedule:\n  mode: solar\n  solar:\n    latitude: 95\n    longitude: 8\n    periods:\n"
                              "      - {start: sunrise, end: sunset}\n" + VALID,
                              ["schedule.solar.latitude: Input should be less than or equal to 90"]),
    "watchdog shorter than stall": ("health:\n  watchdog_s: 30\n  stall_s: 60\n" + VALID,
                                    ["health.watchdog_s: must be > stall_s (60)"]),
    "channel beyond channels": ("audio:\n  channels: 2\n  channel: 2\n" + VALID,
                                ["audio.channel: must be < channels (2)"]),
    "not yaml": ("analysis: [unclosed\n", ["is not valid YAML at line"]),
    "not a mapping": ("- just\n- a list\n", ["must hold sections (key: value), not a list"]),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_config_names_the_problem(tmp_path: Path, case: str) -> None:
    body, expected = BROKEN[case]
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        resolve_config(path, None, {})
    for fragment in expected:
        assert fragment in caught.value.message


@pytest.mark.parametrize("case", ["wrong type", "bad time zone", "overlapping periods", "not yaml"])
def test_broken_config_through_the_cli_is_one_error_without_traceback(tmp_path: Path, case: str) -> None:
    body, expected = BROKEN[case]
    path = write(tmp_path, body)
    result = runner.invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == ConfigError.exit_code
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    assert "error:" in result.output and "hint:" in result.output
    for fragment in expected:
        assert fragment in result.output


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        model:
          bundle: b
          backnd: trt
        analysis:
          labels: labels.txt
          window_s: 10
          hop_s: 12
        schedule:
          timezone: Mars/Olympus_Mons
        audio:
          sample_rate: lots
        """)
    with pytest.raises(ConfigError) as caught:
        resolve_config(path, None, {})
    message = caught.value.message
    assert message.startswith(f"{path} has 4 problems:")
    for fragment in ("model.backnd: unknown key (did you mean 'backend'?)", "analysis.hop_s: must be <= window_s (10)",
                     "schedule.timezone: unknown time zone 'Mars/Olympus_Mons'", "audio.sample_rate: Input should be"):
        assert fragment in message


def test_precedence_is_cli_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "storage:\n  log_dir: records\n")
    (tmp_path / "analysis").mkdir()
    defaults = resolve_config(path, None, {})
    assert defaults.analysis.hop_s == 5.0 and defaults.health.heartbeat_s == 60.0
    assert defaults.storage.log_dir == tmp_path / "records"  # relative to the file's folder
    assert defaults.model.bundle == tmp_path / "bundle"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    overridden = resolve_config(path, None, {"analysis.hop_s": 2.5, "storage.log_dir": "cli-logs"}, cwd=elsewhere)
    assert overridden.analysis.hop_s == 2.5
    assert overridden.storage.log_dir == elsewhere / "cli-logs"  # flags are relative to the working directory


def test_override_errors_use_the_same_messages(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(ConfigError) as caught:
        resolve_config(path, None, {"analysis.hop_s": 20, "schedule.timezone": "Nowhere/City", "unit.unit_ID": "x"})
    message = caught.value.message
    assert "analysis.hop_s: must be <= window_s (10)" in message
    assert "schedule.timezone: unknown time zone 'Nowhere/City'" in message
    assert "unit.unit_ID: unknown key (did you mean 'unit_id'?)" in message


def test_no_file_means_defaults_plus_flags(tmp_path: Path) -> None:
    flags = {"model.bundle": "b", "analysis.labels": str(LABELS), "audio.device": None, "analysis.hop_s": None}
    config = resolve_config(None, None, flags, cwd=tmp_path)
    assert config.model.bundle == tmp_path / "b"
    assert config.schedule.mode == "always"
    assert config.audio.device == "" and config.analysis.hop_s == 5.0  # None: flag not given, default stays


def test_unknown_profile_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(None, "jetson-orin-nan", {})
    assert "did you mean 'jetson-orin-nano'?" in caught.value.hint


def test_config_show_prints_yaml_that_resolves_to_the_same_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "show", "--profile", "raspberry-pi-5", "--set", "analysis.hop_s=2.5"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["analysis"]["hop_s"] == 2.5
    assert shown["schedule"]["mode"] == "daily"
    assert shown["analysis"]["labels"] == "labels/north-america-example.txt"  # relative, as the profile has it
    assert "# CHANGE: species list" in result.stdout  # the profile's comments come along
    again = tmp_path / "shown.yaml"
    again.write_text(result.stdout, encoding="utf-8")
    shutil.copytree(REPO / "firmware_configs" / "labels", tmp_path / "labels")
    reread = resolve_config(again, None, {})
    assert reread.analysis.labels == tmp_path / "labels" / "north-america-example.txt"
    expected = resolve_config(None, "raspberry-pi-5", {"analysis.hop_s": 2.5,
                                                        "analysis.labels": str(reread.analysis.labels)})
    assert reread == expected


def test_profiles_ship_in_a_non_editable_install(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy, so the build leaves nothing in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("edge", "firmware_configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    assert (target / "firmware_configs" / "jetson-orin-nano.yaml").is_file()
    run = subprocess.run([sys.executable, "-m", "edge", "config", "show", "--profile", "jetson-orin-nano"],
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    shown = yaml.safe_load(run.stdout)
    assert shown["analysis"]["labels"] == "labels/north-america-example.txt"  # never the install folder
    assert str(target) not in run.stdout
    assert str(profile_path("jetson-orin-nano")).startswith(str(REPO))  # this process still uses the worktree


def test_the_old_profile_spelling_still_works_and_names_the_new_one() -> None:
    """`--unit PROFILE` became `--profile` (a unit is a recorder); the old spelling gives the same config."""
    new = runner.invoke(app, ["config", "show", "--profile", "raspberry-pi-5"])
    old = runner.invoke(app, ["config", "show", "--unit", "raspberry-pi-5"])
    assert new.exit_code == old.exit_code == 0, old.output
    assert old.stdout == new.stdout
    assert "--unit is now --profile" in old.stderr and "--unit" not in new.stderr
    both = runner.invoke(app, ["config", "show", "--unit", "raspberry-pi-5", "--profile", "generic-x86"])
    assert both.exit_code != 0 and "both --profile and its old spelling --unit" in both.stderr
