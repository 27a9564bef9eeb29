"""``bench`` on a bundle with a TensorRT engine: engines go to TrtBackend, ONNX files to OrtBackend."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from typer.testing import CliRunner

from edge.cli import app as edge_app
from edge.model.bundle import open_bundle, write_manifest
from edge.ops.bench import backend_for

runner = CliRunner()


def with_engine(bundle_dir: Path) -> Path:
    """Register a (never loaded here) trt-fp16 engine entry next to the bundle's ONNX models."""
    bundle = open_bundle(bundle_dir)
    fp32 = bundle.model("fp32")
    (bundle_dir / "audio_encoder.fp16.0123456789ab.plan").write_bytes(b"engine bytes")
    details = {"source_model": "fp32", "source_onnx_sha256": bundle.manifest.files[fp32.path],
               "tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7", "max_batch": 8}
    engine = dataclasses.replace(fp32, path="audio_encoder.fp16.0123456789ab.plan", precision="fp16",
                                 runtime="tensorrt", opset=None, details=details)
    models = {**bundle.manifest.models, "trt-fp16": engine}
    write_manifest(bundle_dir, dataclasses.replace(bundle.manifest, models=models))
    return bundle_dir


def test_manifest_keys_map_to_their_backend() -> None:
    assert backend_for("trt-fp16") == ("trt", "fp16")
    assert backend_for("trt-int8") == ("trt", "int8")
    assert backend_for("int8-trt") == ("ort", "int8-trt")  # the Q/DQ ONNX for TensorRT still runs in ORT
    assert backend_for("fp32") == ("ort", "fp32")


def test_requested_engine_without_tensorrt_is_one_line_about_tensorrt(bundle_copy: Path) -> None:
    with_engine(bundle_copy)
    result = runner.invoke(edge_app, ["bench", "--bundle", str(bundle_copy), "--precision", "trt-fp16",
                                      "--batch", "1", "--windows", "1"])
    assert result.exit_code == 2
    assert "TensorRT is not installed" in result.output and "not ONNX Runtime" not in result.output
    assert "Traceback" not in result.output


def test_default_run_times_onnx_models_and_reports_the_engine_it_cannot_run(bundle_copy: Path) -> None:
    with_engine(bundle_copy)
    result = runner.invoke(edge_app, ["bench", "--bundle", str(bundle_copy), "--batch", "1", "--windows", "1",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(r["precision"], r["backend"]) for r in report["results"]] == [("fp32", "ort")]
    assert "TensorRT is not installed" in report["skipped"]["trt-fp16"]
