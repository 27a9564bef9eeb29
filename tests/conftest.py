"""Session fixtures: a tiny random BioLingual-shaped checkpoint, its bundle, and the shared field recordings."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = Path(os.environ.get("BIOLINGUAL_SHARED_AUDIO", REPO.parent / "shared" / "audio"))

TOAD = "kitzeslab__opensoundscape/great_plains_toad.wav"
NIGHT = "scikit-maad__scikit-maad/S4A03895_20190522_000000.wav"
MAGPIE = "Nachtzuster__BirdNET-Pi/Pica pica_30s.wav"


SINK = "fieldmic"
"""PulseAudio null sink that .ci/run starts; its monitor is the test microphone."""
SINK_ARGS = f"sink_name={SINK} rate=48000 channels=1"


@pytest.fixture(scope="session")
def pulse() -> None:
    """A running PulseAudio with the null sink (fails in CI, skips elsewhere when missing)."""
    running = shutil.which("pactl") is not None and SINK in subprocess.run(
        ["pactl", "list", "short", "sinks"], capture_output=True, text=True).stdout
    if not running:
        message = f"PulseAudio with a null sink '{SINK}' is not running (.ci/run starts it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where no NVIDIA GPU with TensorRT is present."""
    try:
        import tensorrt

        # tensorrt-stubs alone makes `import tensorrt` succeed as an empty namespace package
        has_gpu = hasattr(tensorrt, "Builder") and shutil.which("nvidia-smi") is not None
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and TensorRT")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not SHARED_AUDIO.is_dir():
        pytest.fail(f"field recordings not found at {SHARED_AUDIO}; set BIOLINGUAL_SHARED_AUDIO")
    return SHARED_AUDIO


TORCH_FREE = bool(os.environ.get("BIOLINGUAL_TORCH_FREE"))
"""Set by .ci/run's floors step (a venv with only the core dependencies at their lowest declared versions):
tests that need a checkpoint, and so torch, are skipped there instead of failing."""


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if TORCH_FREE:
        pytest.skip("needs torch (skipped in the torch-free floors run)")
    from export.synthetic import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("checkpoint"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, shared_audio: Path) -> Path:
    """fp32 bundle of the tiny checkpoint. Read-only: copy it (``bundle_copy``) before changing it."""
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle

    out = tmp_path_factory.mktemp("bundle")
    export_fp32_bundle(load_checkpoint(str(tiny_checkpoint)), out, shared_audio)
    return out


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


OWN_LIST = "Great Plains Toad; Anaxyrus cognatus\nSpring Peeper\nNight Ambience\n"
"""The user's own species list of the season tests."""


def own_list_bundle(root: Path, tiny_bundle: Path, tiny_checkpoint: Path) -> tuple[Path, Path]:
    """(bundle, labels): a copy of the tiny bundle under ``root`` with the user's own list (:data:`OWN_LIST`)
    exported into it, as a season starts."""
    from typer.testing import CliRunner

    from export.cli import app as export_app

    bundle = Path(shutil.copytree(tiny_bundle, root / "bundle"))
    labels = root / "my-species.txt"
    labels.write_text(OWN_LIST, encoding="utf-8")
    exported = CliRunner().invoke(export_app, ["labels", "--model", str(tiny_checkpoint), "--bundle", str(bundle),
                                               "--labels", str(labels)])
    assert exported.exit_code == 0, exported.output
    return bundle, labels


def unit_card(source: Path, recording: Path, card: Path, bundle: Path, labels: Path, unit: str,
              profile: str = "generic-x86") -> None:
    """A unit's season on ``card``: the field recording ``source`` copied to ``recording`` (its AudioMoth name
    says when it was recorded) and analysed by the daemon (`run --input`, clips off, every score kept)."""
    from typer.testing import CliRunner

    from edge.cli import app

    recording.parent.mkdir(parents=True)
    shutil.copy(source, recording)
    ran = CliRunner().invoke(app, [
        "run", "--profile", profile, "--labels", str(labels), "--bundle", str(bundle), "--log-dir", str(card),
        "--precision", "fp32", "--threshold", "-100", "--input", str(recording), "--fast", "--set",
        f"unit.unit_id={unit}", "--set", "storage.clips.mode='off'"])
    assert ran.exit_code == 0, ran.output


def load_48k(path: Path) -> np.ndarray:
    from edge.audio.files import read_file

    return read_file(path, 48_000)


@pytest.fixture(scope="session")
def toad_in_night(tmp_path_factory: pytest.TempPathFactory, shared_audio: Path) -> Path:
    """60 s of quiet night background with 10 s of toad trill spliced in at 40-50 s (48 kHz WAV)."""
    night = load_48k(shared_audio / NIGHT)
    toad = load_48k(shared_audio / TOAD)
    rate = 48_000
    track = np.tile(night, 6)[: 60 * rate].copy()
    track[40 * rate : 50 * rate] = toad[5 * rate : 15 * rate]
    path = tmp_path_factory.mktemp("splice") / "toad_at_40s.wav"
    sf.write(path, track, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def example_labels(tmp_path_factory: pytest.TempPathFactory, shared_audio: Path) -> tuple[Path, Path]:
    """(labels.txt, examples dir) defining 'toad' and 'night' by example recordings not used in the splice."""
    root = tmp_path_factory.mktemp("examples")
    rate = 48_000
    toad = load_48k(shared_audio / TOAD)
    night = load_48k(shared_audio / NIGHT)
    (root / "toad").mkdir()
    (root / "night").mkdir()
    sf.write(root / "toad" / "trill.wav", toad[25 * rate : 35 * rate], rate)
    sf.write(root / "night" / "quiet.wav", night, rate)
    labels = root / "labels.txt"
    labels.write_text("toad\nnight\n", encoding="utf-8")
    return labels, root


@pytest.fixture(scope="session")
def example_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path,
                   example_labels: tuple[Path, Path]) -> Path:
    """The tiny bundle plus the example-defined toad/night labels."""
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels
    from export.labels import example_embeddings, store_label_set

    out = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("exbundle") / "bundle"))
    labels_path, examples = example_labels
    bundle = open_bundle(out)
    labels = read_labels(labels_path)
    store_label_set(bundle, labels, example_embeddings(bundle, labels, examples), "examples", ())
    return out


# --- precision (INT8/FP16/TensorRT) fixtures --------------------------------------------------------------------

CALIBRATION_FOLDERS = ("kitzeslab__opensoundscape", "kahst__BirdNET-Analyzer", "scikit-maad__scikit-maad")
"""Recordings the precision tests calibrate on; every other folder of the shared audio is held out for the gates."""
PRECISION_WINDOWS = 96


def _link_folders(root: Path, shared_audio: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        for path in (shared_audio / name).iterdir():
            (root / name / path.name).symlink_to(path)
    return root


@pytest.fixture(scope="session")
def precision_audio(tmp_path_factory: pytest.TempPathFactory, shared_audio: Path) -> tuple[Path, Path]:
    """(calibration folder, held-out folder): disjoint sets of real recordings, as symlinks."""
    root = tmp_path_factory.mktemp("precision_audio")
    held_out = sorted(p.name for p in shared_audio.iterdir() if p.is_dir() and p.name not in CALIBRATION_FOLDERS)
    return (_link_folders(root / "calibration", shared_audio, list(CALIBRATION_FOLDERS)),
            _link_folders(root / "held_out", shared_audio, held_out))


@pytest.fixture(scope="session")
def trained_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path,
                            precision_audio: tuple[Path, Path]) -> Path:
    """The tiny checkpoint after a few seconds of contrastive training: non-collapsed embeddings."""
    from export.reference_training import TrainOptions, train_reference

    calibration, _ = precision_audio
    return train_reference(tiny_checkpoint, [calibration], tmp_path_factory.mktemp("trained"),
                           TrainOptions(steps=25, batch=12, pool_windows=48))


def add_file_labels(bundle: Path, audio: Path, root: Path) -> None:
    """One label per recording under ``audio``, defined by that recording (example embeddings)."""
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels
    from export.labels import example_embeddings, store_label_set

    names = []
    for number, path in enumerate(sorted(p for p in audio.rglob("*.wav"))):
        name = f"rec{number:02d}"
        (root / name).mkdir(parents=True)
        (root / name / path.name).symlink_to(path.resolve())
        names.append(name)
    labels_path = root / "labels.txt"
    labels_path.write_text("\n".join(names) + "\n", encoding="utf-8")
    opened = open_bundle(bundle)
    labels = read_labels(labels_path)
    store_label_set(opened, labels, example_embeddings(opened, labels, root), "examples", ())


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory, trained_tiny_checkpoint: Path,
                    precision_audio: tuple[Path, Path]) -> Path:
    from calibration.dataset import build_calibration_set, save_calibration_set
    from export.checkpoint import load_checkpoint

    params = load_checkpoint(str(trained_tiny_checkpoint)).frontend
    data = build_calibration_set([precision_audio[0]], params, PRECISION_WINDOWS, seed=0)
    return save_calibration_set(data, tmp_path_factory.mktemp("calibration"))


@pytest.fixture(scope="session")
def precision_bundle(tmp_path_factory: pytest.TempPathFactory, trained_tiny_checkpoint: Path,
                     precision_audio: tuple[Path, Path], calibration_dir: Path) -> Path:
    """Trained tiny bundle with file labels, fp16, int8 (ORT) and int8-trt, verified on held-out audio.
    Read-only: copy it before changing it."""
    from calibration.dataset import load_calibration_set
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.quantize import QuantizeOptions, add_precision
    from export.verify import verify_bundle

    out = tmp_path_factory.mktemp("precision_bundle") / "bundle"
    export_fp32_bundle(load_checkpoint(str(trained_tiny_checkpoint)), out, precision_audio[1])
    add_file_labels(out, precision_audio[0], tmp_path_factory.mktemp("file_labels"))
    data = load_calibration_set(calibration_dir)
    add_precision(out, data, QuantizeOptions(precision="fp16"))
    add_precision(out, data, QuantizeOptions(precision="int8", target="ort"))
    add_precision(out, data, QuantizeOptions(precision="int8", target="trt"))
    verify_bundle(out, [precision_audio[1]])
    return out


# --- text tower fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, tiny_checkpoint: Path) -> Path:
    """The tiny bundle plus its fp32 text encoder and tokenizer.json. Read-only: copy it before changing it."""
    from export.checkpoint import load_checkpoint
    from export.text_onnx import export_text_fp32

    out = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("textbundle") / "bundle"))
    export_text_fp32(load_checkpoint(str(tiny_checkpoint)), out)
    return out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by playwright (its own browser download is never used)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install 'biolingual-edge[test]'")
    assert CHROMIUM, "no chromium on PATH: apt-get install chromium (as .ci/run does)"
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
