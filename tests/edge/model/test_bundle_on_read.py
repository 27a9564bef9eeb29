"""A run hashes the bundle files it loads, not every precision's model: a changed file it loads is refused in
one line, a changed file it does not load (another precision) neither stops nor slows its start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.errors import BundleError
from edge.model import bundle as bundle_module
from edge.model.bundle import ORT_OPTIMIZED_KEY, open_bundle
from tests.conftest import REPO


@pytest.fixture(scope="module")
def two_precisions(tmp_path_factory: pytest.TempPathFactory, example_bundle: Path) -> Path:
    """The example bundle (fp32, toad/night labels) plus an fp16 model. Read-only: copy it."""
    from export.quantize import QuantizeOptions, add_precision

    out = Path(shutil.copytree(example_bundle, tmp_path_factory.mktemp("two") / "bundle"))
    add_precision(out, None, QuantizeOptions(precision="fp16"))
    return out


@pytest.fixture
def bundle(two_precisions: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(two_precisions, tmp_path / "bundle"))


def flip_byte(path: Path, at: int = 1000) -> None:
    with open(path, "r+b") as handle:
        handle.seek(at)
        old = handle.read(1)
        handle.seek(at)
        handle.write(bytes([old[0] ^ 0xFF]))


def model_file(bundle: Path, precision: str) -> Path:
    """The file a run of ``precision`` loads (ONNX Runtime's optimised graph where the bundle has one)."""
    entry = open_bundle(bundle, verify=False).manifest.models[precision]
    return bundle / entry.details.get(ORT_OPTIMIZED_KEY, {}).get("path", entry.path)


def run_daemon(bundle: Path, labels: Path, recording: Path, card: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge", "run", "--labels", str(labels), "--bundle", str(bundle), "--log-dir",
               str(card), "--input", str(recording), "--fast", "--precision", "fp32", "--threshold", "0.5"]
    return subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_on_read_checks_each_file_once_when_it_is_asked_for(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    opened = open_bundle(bundle, verify="on_read")
    assert hashed == []  # opening reads the manifest only
    fp32 = opened.manifest.models["fp32"].path
    assert opened.path(fp32) == bundle / fp32
    opened.path(fp32)
    assert hashed == [Path(fp32).name]  # once, however often it is asked for
    open_bundle(bundle)
    assert len(hashed) == 1 + len(opened.manifest.files)  # the default still checks every file



def test_check_model_and_path_share_what_was_checked(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    opened = open_bundle(bundle, verify="on_read")
    opened.check_model("fp32")
    loaded = model_file(bundle, "fp32").name
    assert loaded in hashed
    checked = list(hashed)
    opened.path(opened.manifest.models["fp32"].path)
    opened.path(str(model_file(bundle, "fp32").relative_to(bundle)))
    opened.check_model("fp32")
    assert hashed == checked  # what check_model hashed, reading it (or checking it again) does not hash again
    hashed.clear()
    open_bundle(bundle).check_model("fp16")
    assert len(hashed) == len(open_bundle(bundle, verify=False).manifest.files)  # checked at opening, not again


def test_on_read_refuses_a_changed_file_when_it_is_read_and_only_then(bundle: Path) -> None:
    flip_byte(model_file(bundle, "fp16"))
    opened = open_bundle(bundle, verify="on_read")
    opened.path(opened.manifest.models["fp32"].path)
    with pytest.raises(BundleError, match=r"audio_encoder\.fp16\.onnx is corrupted"):
        opened.path(opened.manifest.models["fp16"].path)
    (bundle / opened.manifest.models["fp32"].path).unlink()
    with pytest.raises(BundleError, match="is missing"):
        open_bundle(bundle, verify="on_read").path(opened.manifest.models["fp32"].path)


def test_the_daemon_starts_past_another_precisions_changed_file(
        bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    flip_byte(model_file(bundle, "fp16"))  # the run loads fp32: the fp16 file is not read
    done = run_daemon(bundle, example_labels[0], toad_in_night, tmp_path / "card")
    assert done.returncode == 0, done.stderr
    assert "window(s) analysed (60 s" in done.stderr.strip().splitlines()[-1]


def test_the_daemon_refuses_the_changed_model_it_loads_in_one_line(
        bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    used = model_file(bundle, "fp32")
    flip_byte(used)
    done = run_daemon(bundle, example_labels[0], toad_in_night, tmp_path / "card")
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "corrupted" in line]
    assert len(errors) == 1 and used.name in errors[0], done.stderr
    assert any(line.lstrip().startswith("hint:") for line in lines), done.stderr
    assert "Traceback" not in done.stderr


def run_analyze(bundle: Path, labels: Path, recording: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge", "analyze", str(recording), "--labels", str(labels), "--bundle",
               str(bundle), "--out", str(out), "--precision", "fp32"]
    return subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_analyze_checks_the_model_it_loads_and_not_the_others(
        bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path) -> None:
    flip_byte(model_file(bundle, "fp16"))
    done = run_analyze(bundle, example_labels[0], toad_in_night, tmp_path / "ok")
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "ok").glob("*.csv")), "analyze wrote its tables"
    flip_byte(model_file(bundle, "fp32"))
    refused = run_analyze(bundle, example_labels[0], toad_in_night, tmp_path / "refused")
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "is corrupted" in error[0], refused.stderr


def worker_spec(bundle: Path, labels: Path) -> object:
    """The spec ``analyze --engine ray`` hands its workers, made as analyze makes it (parent checks the model)."""
    from edge.batch.piece_analysis import AnalysisSpec, AnalyzeOptions
    from edge.batch.pieces import WindowGrid
    from edge.scoring.labels import read_labels
    from edge.stream.pipeline import label_rules

    parent = open_bundle(bundle, verify="on_read")
    parent.check_model("fp32")
    label_rules(parent, read_labels(labels), str(labels), (), AnalyzeOptions().score_mode)
    return AnalysisSpec(bundle, labels, AnalyzeOptions(precision="fp32"), WindowGrid(1, 1, 1), 48_000, 1,
                        verify_bundle=True, verified=tuple(parent.stamps().items()))


def test_a_ray_worker_trusts_the_parents_check_of_an_unchanged_model_and_hashes_nothing_again(
        bundle: Path, example_labels: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.batch.piece_analysis import build_spec_stages

    spec = worker_spec(bundle, example_labels[0])
    hashed: list[str] = []
    real = bundle_module.sha256_file
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    build_spec_stages(spec)  # type: ignore[arg-type]
    assert model_file(bundle, "fp32").name not in hashed, hashed
    assert "audio_encoder.fp32.onnx" not in hashed and not any(name.endswith(".npz") for name in hashed), hashed


@pytest.mark.parametrize("change", ["rewritten", "replaced, modification time put back"])
def test_a_ray_worker_refuses_a_model_changed_after_the_parents_check_in_one_line(
        change: str, bundle: Path, example_labels: tuple[Path, Path]) -> None:
    from edge.batch.piece_analysis import build_spec_stages

    spec = worker_spec(bundle, example_labels[0])
    used = model_file(bundle, "fp32")
    before = used.stat()
    if change == "rewritten":
        flip_byte(used)
    else:  # a copy of the same size put in its place, its modification time set back: a new inode and ctime
        copy = used.with_name("copy.onnx")
        shutil.copyfile(used, copy)
        flip_byte(copy)
        os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(copy, used)
    assert used.stat().st_size == before.st_size
    with pytest.raises(BundleError, match=rf"{used.name} is corrupted") as refused:
        build_spec_stages(spec)  # type: ignore[arg-type]
    assert "\n" not in str(refused.value)
