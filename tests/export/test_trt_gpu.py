"""TensorRT: manifest checks without a GPU; real engine builds and ORT comparison on a GPU (``gpu`` marker)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.model.backends.trt import engine_mismatch
from export.cli import app

runner = CliRunner()
BUILT = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}


def test_engine_from_another_gpu_or_tensorrt_is_refused() -> None:
    assert engine_mismatch(BUILT, "10.3.0", "Orin", "8.7") is None
    other_gpu = engine_mismatch(BUILT, "10.3.0", "NVIDIA H100", "9.0")
    assert other_gpu and "built on Orin" in other_gpu and "NVIDIA H100" in other_gpu
    other_trt = engine_mismatch(BUILT, "10.13.0", "Orin", "8.7")
    assert other_trt and "TensorRT 10.3.0" in other_trt


def test_trt_without_tensorrt_or_gpu_is_one_line_error(precision_bundle: Path, tmp_path: Path) -> None:
    try:
        import tensorrt

        if hasattr(tensorrt, "Builder"):
            pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    copy = Path(shutil.copytree(precision_bundle, tmp_path / "b"))
    result = runner.invoke(app, ["trt", "--bundle", str(copy), "--precision", "fp16"])
    assert result.exit_code == 2 and "TensorRT is not installed" in result.output
    assert "Traceback" not in result.output


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_builds_and_matches_onnx_runtime(precision_bundle: Path, precision_audio: tuple[Path, Path],
                                                precision: str, tmp_path: Path) -> None:
    from edge.model.backends.trt import TrtBackend
    from edge.model.bundle import open_bundle
    from export.fidelity import bundle_label_embeddings, fidelity, gates_for
    from export.quantize import embed_all, ort_session
    from export.verify import audio_features

    copy = Path(shutil.copytree(precision_bundle, tmp_path / "b"))
    caches = tmp_path / "timing"
    result = runner.invoke(app, ["trt", "--bundle", str(copy), "--precision", precision, "--max-batch", "4",
                                 "--timing-cache", str(caches)])
    assert result.exit_code == 0, result.output
    assert [c.stat().st_size > 0 for c in caches.glob("*.cache")] == [True]
    bundle = open_bundle(copy)
    entry = bundle.model(f"trt-{precision}")
    source = bundle.model(entry.details["source_model"])
    assert entry.details["source_onnx_sha256"] == bundle.manifest.files[source.path]
    features = audio_features([precision_audio[1]], bundle)
    reference = embed_all(ort_session(copy / bundle.model("fp32").path), features)
    with TrtBackend(bundle, precision) as backend:
        candidate = backend.embed(features)
    assert candidate.dtype == np.float32 and candidate.shape == reference.shape
    assert fidelity(reference, candidate, bundle_label_embeddings(bundle)).passes(gates_for(precision))
