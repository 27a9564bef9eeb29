"""Which model a unit runs: chosen by manifest key of (backend, precision), so Jetson profiles pick engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config.loader import resolve_config
from edge.errors import BundleError
from edge.model.bundle import Bundle, FrontendParams, Manifest, ModelEntry, TensorSpec
from edge.ops.checks import check_model
from edge.ops.setup import choose_precision

REPO = Path(__file__).resolve().parents[3]
JETSON_PROFILE = REPO / "firmware_configs" / "jetson-orin-nx.yaml"
FRONTEND = FrontendParams(sampling_rate=48_000, n_fft=1024, hop_length=480, n_mels=64, f_min=50.0, f_max=14_000.0,
                          max_length_s=10)
IO = ((TensorSpec("input_features", ("batch", 1, 1001, 64), "float32"),),
      (TensorSpec("audio_embeds", ("batch", 32), "float32"),))


def entry(precision: str, runtime: str) -> ModelEntry:
    suffix = "plan" if runtime == "tensorrt" else "onnx"
    return ModelEntry(f"audio_encoder.{precision}.{suffix}", precision, runtime, *IO)


def bundle_with(tmp_path: Path, **models: ModelEntry) -> Bundle:
    manifest = Manifest(model_id="tiny", model_revision="0", frontend=FRONTEND, embedding_dim=32, logit_scale=10.0,
                        models={key.replace("_", "-"): m for key, m in models.items()})
    return Bundle(tmp_path, manifest)


def jetson_config(tmp_path: Path, backend: str = "trt"):  # type: ignore[no-untyped-def]
    config = resolve_config(JETSON_PROFILE, None, {})
    return config.model_copy(update={"model": config.model.model_copy(update={"backend": backend,
                                                                              "bundle": tmp_path})})


def test_trt_profile_prefers_the_int8_engine_over_fp16(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, fp32=entry("fp32", "onnxruntime"), fp16=entry("fp16", "onnxruntime"),
                         trt_fp16=entry("fp16", "tensorrt"), trt_int8=entry("int8", "tensorrt"))
    assert choose_precision(jetson_config(tmp_path), bundle) == "int8"


def test_trt_profile_ignores_the_onnx_runtime_int8_file(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, fp32=entry("fp32", "onnxruntime"), int8=entry("int8", "onnxruntime"),
                         trt_fp16=entry("fp16", "tensorrt"))
    assert choose_precision(jetson_config(tmp_path), bundle) == "fp16"


def test_ort_backend_still_chooses_onnx_files(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, fp32=entry("fp32", "onnxruntime"), trt_int8=entry("int8", "tensorrt"))
    assert choose_precision(jetson_config(tmp_path, backend="ort"), bundle) == "fp32"


def test_trt_profile_without_any_engine_names_the_engine_keys(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, fp32=entry("fp32", "onnxruntime"), int8=entry("int8", "onnxruntime"))
    with pytest.raises(BundleError, match="trt-int8, trt-fp16, trt-fp32") as raised:
        choose_precision(jetson_config(tmp_path), bundle)
    assert "biolingual-export trt" in raised.value.hint


def test_check_on_a_jetson_loads_the_fp16_engine_not_a_missing_int8_engine(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, fp32=entry("fp32", "onnxruntime"), int8=entry("int8", "onnxruntime"),
                         trt_fp16=entry("fp16", "tensorrt"))
    row = check_model(jetson_config(tmp_path), bundle)
    assert "trt-int8" not in row.detail and "trt-fp16" in row.detail, row.detail
