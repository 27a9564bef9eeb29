"""Hints point the right way: an unknown precision is not something to quantize, a failed gate is not fixed
by verifying again, and a bundle with only fp32 has nothing to verify (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.errors import BundleError
from edge.model.bundle import (
    PARITY_FILE,
    FrontendParams,
    Manifest,
    ModelEntry,
    TensorSpec,
    open_bundle,
    sha256_file,
    write_manifest,
)
from edge.model.precision_gate import check_precision

FRONTEND = FrontendParams(48_000, 1024, 480, 64, 50.0, 14_000.0, 10)


def bundle_with(root: Path, keys: tuple[str, ...], int8_passed: bool | None = None) -> Path:
    """A bundle whose model files are placeholders (hints are all that is tested) and an optional verdict."""
    models = {}
    for key in keys:
        (root / f"{key}.onnx").write_bytes(key.encode())
        models[key] = ModelEntry(path=f"{key}.onnx", precision=key.split("-")[0], runtime="onnxruntime",
                                 inputs=(TensorSpec("input_features", ("batch", 1, 1001, 64), "float32"),),
                                 outputs=(TensorSpec("audio_embeds", ("batch", 32), "float32"),))
    if int8_passed is not None:
        verdict = {"stage": "ort_fp32->ort_int8", "passed": int8_passed, "sha256": sha256_file(root / "int8.onnx")}
        (root / PARITY_FILE).write_text(json.dumps({"stages": {}, "models": {"int8": verdict}}))
    write_manifest(root, Manifest(model_id="ckpt", model_revision="sha256:0", frontend=FRONTEND, embedding_dim=32,
                                  logit_scale=10.0, models=models))
    return root


def test_unknown_precision_is_not_suggested_to_quantize(tmp_path: Path) -> None:
    bundle = open_bundle(bundle_with(tmp_path, ("fp32",)))
    with pytest.raises(BundleError) as info:
        bundle.model("fp64")
    assert "quantize" not in info.value.hint and "not a precision" in info.value.hint and "fp32" in info.value.hint
    with pytest.raises(BundleError) as info:
        bundle.model("int8-trt")
    assert "--target trt" in info.value.hint


def test_failed_gate_does_not_suggest_verifying_again(tmp_path: Path) -> None:
    bundle = open_bundle(bundle_with(tmp_path, ("fp32", "int8"), int8_passed=False))
    with pytest.raises(BundleError, match="failed its parity gates") as info:
        check_precision(bundle, "int8")
    assert "verify" not in info.value.hint and "re-quantize" in info.value.hint


def test_missing_report_does_suggest_verify(tmp_path: Path) -> None:
    bundle = open_bundle(bundle_with(tmp_path, ("fp32", "int8")))
    with pytest.raises(BundleError, match="no parity report") as info:
        check_precision(bundle, "int8")
    assert "biolingual-export verify" in info.value.hint


def test_verify_with_only_fp32_says_so(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from export.errors import ExportError
    from export.verify import verify_bundle

    bundle = bundle_with(tmp_path, ("fp32",))
    with pytest.raises(ExportError, match="only the fp32 model") as info:
        verify_bundle(bundle, [tmp_path])
    assert "quantize" in info.value.hint and "--model" in info.value.hint


def test_quantize_fp16_says_what_to_run_next(bundle_copy: Path) -> None:
    from typer.testing import CliRunner

    from export.cli import app as export_app

    result = CliRunner().invoke(export_app, ["quantize", "--bundle", str(bundle_copy), "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    assert f"next: `biolingual-export verify --bundle {bundle_copy} --audio" in result.output.replace("\n", " ")


def test_quantize_with_verify_audio_writes_the_verdict_analyze_checks(example_bundle: Path, tmp_path: Path,
                                                                      shared_audio: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from export.cli import app as export_app

    bundle = Path(shutil.copytree(example_bundle, tmp_path / "bundle"))
    result = CliRunner().invoke(export_app, ["quantize", "--bundle", str(bundle), "--precision", "fp16",
                                             "--verify-audio", str(shared_audio / "kitzeslab__opensoundscape")])
    assert "ort_fp32->ort_fp16" in result.output, result.output
    verdict = json.loads((bundle / PARITY_FILE).read_text())["models"]["fp16"]
    assert verdict["sha256"] == sha256_file(bundle / "audio_encoder.fp16.onnx")
