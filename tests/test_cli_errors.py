"""Every command of both CLIs, given bad input: a non-zero exit, an `error:` and a `hint:` line, no traceback.

Real console entry points in a subprocess (``python -m edge`` / ``python -m export``), so what is asserted is
what a person sees. A command added without a case here fails :func:`test_every_command_has_a_bad_input_case`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from edge.model.bundle import FrontendParams, Manifest, write_manifest

SUBPROCESS_TIMEOUT_S = 120
NO_INPUT = {"biolingual-edge devices", "biolingual-edge config profiles"}
"""Commands that take no input a person could get wrong."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an empty bundle (valid manifest, no models), a label file, a text file named .mp3 and a
    unit config whose log folder (the SD card) is not there."""
    root = tmp_path_factory.mktemp("scene")
    bundle = root / "bundle"
    bundle.mkdir()
    write_manifest(bundle, Manifest(model_id="ckpt", model_revision="sha256:0", embedding_dim=32, logit_scale=10.0,
                                    frontend=FrontendParams(48_000, 1024, 480, 64, 50.0, 14_000.0, 10)))
    (root / "labels.txt").write_text("\ufeffGreat Plains Toad\n", encoding="utf-8")
    (root / "notes.mp3").write_text("not audio, just a note\n", encoding="utf-8")
    (root / "unit.yaml").write_text(
        f"model: {{bundle: {bundle}}}\nanalysis: {{labels: {root / 'labels.txt'}, threshold: 5}}\n"
        f"storage: {{log_dir: {root / 'card' / 'biolingual'}}}\n", encoding="utf-8")
    return root


CASES: dict[str, list[str]] = {
    "biolingual-edge analyze": ["analyze", "{root}/notes.mp3", "--labels", "{root}/labels.txt", "--bundle",
                                "{root}/bundle", "--out", "{root}/out", "--score-mode", "foo"],
    "biolingual-edge run": ["run", "--config", "{root}/unit.yaml", "--input", "{root}/notes.mp3", "--fast"],
    "biolingual-edge bench": ["bench", "--bundle", "{root}/no-bundle"],
    "biolingual-edge plan": ["plan", "--profile", "raspberry-pi-5", "--date", "21/06/2025"],
    "biolingual-edge check": ["check", "--profile", "raspbery-pi-5"],
    "biolingual-edge config show": ["config", "show", "--profile", "jetson-orin-nan"],
    "biolingual-edge service install": ["service", "install", "--config", "{root}/missing.yaml", "--dry-run"],
    "biolingual-edge logs collect": ["logs", "collect", "{root}", "--into", "{root}/labels.txt/season.duckdb"],
    "biolingual-edge logs export": ["logs", "export", "--db", "{root}/missing.duckdb", "--format", "csv",
                                    "--out", "{root}/x.csv"],
    "biolingual-edge logs summary": ["logs", "summary", "--db", "{root}/missing.duckdb", "--out", "{root}/s"],
    "biolingual-edge logs report": ["logs", "report", "--db", "{root}/missing.duckdb", "--out", "{root}/r.html"],
    "biolingual-edge logs rescore": ["logs", "rescore", "--db", "{root}/missing.duckdb", "--bundle", "{root}/bundle",
                                     "--labels", "{root}/labels.txt", "--out", "{root}/rescored"],
    "biolingual-edge logs search": ["logs", "search", "--db", "{root}/missing.duckdb", "--bundle", "{root}/bundle",
                                    "--example", "{root}/notes.mp3", "--out", "{root}/hits"],
    "biolingual-edge logs review": ["logs", "review", "--db", "{root}/missing.duckdb", "--bundle", "{root}/bundle",
                                    "--labels", "{root}/labels.txt", "--out", "{root}/review"],
    "biolingual-edge logs fit-confidence": ["logs", "fit-confidence", "--review", "{root}/labels.txt", "--out",
                                            "{root}/confidence.json"],
    "biolingual-edge logs live": ["logs", "live", "--broker", "http://127.0.0.1:1883", "--into",
                                  "{root}/live.duckdb"],
    "biolingual-edge logs train-head": ["logs", "train-head", "--db", "{root}/missing.duckdb", "--review",
                                        "{root}/missing.csv", "--bundle", "{root}/bundle", "--name", "frogs"],
    "biolingual-edge labels add": ["labels", "add", "--bundle", "{root}/bundle", "--labels", "{root}/labels.txt"],
    "biolingual-export onnx": ["onnx", "--out", "{root}/new-bundle"],
    "biolingual-export text-onnx": ["text-onnx", "--model", "{root}/no-checkpoint", "--bundle", "{root}/bundle"],
    "biolingual-export labels": ["labels", "--bundle", "{root}/bundle"],
    "biolingual-export random-checkpoint": ["random-checkpoint", "--out", "{root}/ckpt", "--size", "bad"],
    "biolingual-export calibrate": ["calibrate", "--audio", "{root}/notes.mp3", "--bundle", "{root}/no-bundle",
                                    "--out", "{root}/calib"],
    "biolingual-export quantize": ["quantize", "--bundle", "{root}/bundle", "--precision", "fp64"],
    "biolingual-export verify": ["verify", "--bundle", "{root}/bundle", "--audio", "{root}"],
    "biolingual-export trt": ["trt", "--bundle", "{root}/bundle", "--precision", "fp16"],
}
EXTRA_CASES: dict[str, list[str]] = {
    "analyze unknown precision": ["analyze", "{root}/notes.mp3", "--labels", "{root}/labels.txt", "--bundle",
                                  "{root}/bundle", "--out", "{root}/out", "--precision", "fp64"],
    "onnx into a non-empty folder": ["onnx", "--out", "{root}", "--parity-audio", "{root}"],
    "onnx with too little parity audio": ["onnx", "--out", "{root}/b2", "--parity-audio", "{root}"],
    "labels from a missing examples folder": ["labels", "--bundle", "{root}/bundle", "--examples", "{root}/none"],
}


def invoke(program: str, args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    module = "edge" if program == "biolingual-edge" else "export"
    filled = [a.format(root=root) for a in args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", module, *filled], capture_output=True, text=True, env=env,
                          timeout=SUBPROCESS_TIMEOUT_S, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert "error:" in output and "hint:" in output, output


def all_commands(group: Any, prefix: str) -> set[str]:
    """Full names of the visible leaf commands of a click group, lazily loaded groups (the unit CLI's ``logs``)
    included (typer may vendor its own click: duck-typed)."""
    names = set()
    context = group.context_class(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if command is None or command.hidden:
            continue
        if hasattr(command, "commands"):
            names |= all_commands(command, f"{prefix} {name}")
        else:
            names.add(f"{prefix} {name}")
    return names


def test_every_command_has_a_bad_input_case() -> None:
    from edge.cli import app as edge_app
    from export.cli import app as export_app

    commands = (all_commands(typer.main.get_command(edge_app), "biolingual-edge")
                | all_commands(typer.main.get_command(export_app), "biolingual-export"))
    assert commands - NO_INPUT - set(CASES) == set(), "add a bad-input case for these commands"


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_input_is_one_error_line_and_a_hint(scene: Path, command: str) -> None:
    program = command.split()[0]
    if program == "biolingual-export" or "logs" in command:
        pytest.importorskip("onnx" if program == "biolingual-export" else "duckdb")
    assert_one_line_error(invoke(program, CASES[command], scene))


@pytest.mark.parametrize("case", sorted(EXTRA_CASES))
def test_more_bad_input(scene: Path, case: str) -> None:
    program = "biolingual-edge" if EXTRA_CASES[case][0] == "analyze" else "biolingual-export"
    if program == "biolingual-export":
        pytest.importorskip("onnx")
    assert_one_line_error(invoke(program, EXTRA_CASES[case], scene))
