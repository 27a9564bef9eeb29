"""The engine build path without a GPU: builder settings, timing cache, atomic writes, stale engines, and
one-line errors. TensorRT and cuda-python are the stand-ins in tests/fake_gpu (signatures of tensorrt-stubs);
real bundles, real ONNX files, real manifests. The real builder runs under ``pytest -m gpu``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import onnx
import pytest
from onnx import TensorProto, helper

from edge.errors import BackendError
from edge.model.backends.trt import TrtBackend
from edge.model.bundle import open_bundle, write_manifest
from export.errors import ExportError
from export.trt_build import TIMING_CACHE_DIR, TrtBuildOptions, build_engine, timing_cache_file

FAKE_GPU = Path(__file__).resolve().parents[1] / "fake_gpu"
FAKE_MODULES = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime")
TF32 = 6


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The stand-in ``tensorrt`` (and cuda-python) importable for this test only."""
    monkeypatch.syspath_prepend(str(FAKE_GPU))
    for name in FAKE_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import tensorrt

    tensorrt.CALLS.clear()
    yield tensorrt
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)


def calls(trt: ModuleType, name: str) -> list[tuple[object, ...]]:
    return [args for call, args in trt.CALLS if call == name]


def test_fp32_engine_clears_tf32_and_the_profile_is_tuned_for_batch_1(fake_trt: ModuleType,
                                                                      bundle_copy: Path) -> None:
    entry = build_engine(bundle_copy, TrtBuildOptions(precision="fp32", max_batch=4))
    assert calls(fake_trt, "clear_flag") == [(TF32,)]
    (shapes,) = calls(fake_trt, "add_optimization_profile")[0]
    frame = tuple(int(d) for d in entry.inputs[0].shape[1:])
    assert shapes[entry.inputs[0].name] == ((1, *frame), (1, *frame), (4, *frame))
    assert entry.details["opt_batch"] == 1 and entry.details["tf32"] is False
    assert entry.details["operator_table"] == "10.3"
    bundle = open_bundle(bundle_copy)  # checksums of the plan and every other file match
    assert bundle.model("trt-fp32").path == entry.path


def test_fp16_engine_keeps_tf32_for_its_fp32_layers(fake_trt: ModuleType, bundle_copy: Path) -> None:
    from export.quantize import QuantizeOptions, add_precision

    add_precision(bundle_copy, None, QuantizeOptions(precision="fp16"))
    build_engine(bundle_copy, TrtBuildOptions(precision="fp16"))
    assert calls(fake_trt, "clear_flag") == []


def test_timing_cache_is_keyed_by_gpu_and_version_and_reused(fake_trt: ModuleType, bundle_copy: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    cache = timing_cache_file(bundle_copy / TIMING_CACHE_DIR, "Orin", "8.7", fake_trt.__version__)
    assert cache.name == "orin-sm8.7-trt10.3.0.30.cache" and cache.stat().st_size > 0
    assert first.details["timing_cache"] == "new"
    second = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    assert second.details["timing_cache"] == "reused"
    assert calls(fake_trt, "set_timing_cache")[-1] == (cache.read_bytes().removesuffix(b"+timings"), True)


def test_a_cache_tensorrt_refuses_falls_back_to_an_empty_one(fake_trt: ModuleType, bundle_copy: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    monkeypatch.setenv("FAKE_TRT_CACHE", "reject")
    entry = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    assert entry.details["timing_cache"] == "discarded"
    assert calls(fake_trt, "set_timing_cache")[-2:] == [(calls(fake_trt, "set_timing_cache")[-2][0], False),
                                                       (b"", True)]
    open_bundle(bundle_copy)


def test_no_timing_cache_back_still_registers_the_engine(fake_trt: ModuleType, bundle_copy: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRT_CACHE", "none")
    entry = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    bundle = open_bundle(bundle_copy)
    assert bundle.model("trt-fp32").path == entry.path
    assert not (bundle_copy / TIMING_CACHE_DIR).exists()


def test_rebuild_replaces_the_old_plan_and_leaves_no_stray_files(fake_trt: ModuleType, bundle_copy: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    old = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    monkeypatch.setattr(fake_trt, "__version__", "10.3.1.0")
    new = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    assert new.path != old.path and not (bundle_copy / old.path).exists()
    assert sorted(p.name for p in bundle_copy.glob("*.plan*")) == [new.path]
    assert set(open_bundle(bundle_copy).manifest.files) >= {new.path}


def hann_only_bundle(bundle: Path) -> None:
    """Replace the bundle's fp32 ONNX by a graph with a HannWindow node (TensorRT 10.4+) and re-checksum."""
    manifest = open_bundle(bundle).manifest
    spec = manifest.models["fp32"].inputs[0]
    graph = helper.make_graph(
        [helper.make_node("HannWindow", ["size"], ["window"], name="hann")], "g",
        [helper.make_tensor_value_info(spec.name, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, None)],
        [helper.make_tensor("size", TensorProto.INT64, [], [1024])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(bundle / manifest.models["fp32"].path))
    write_manifest(bundle, manifest)


def test_graph_is_checked_against_the_installed_tensorrt(fake_trt: ModuleType, bundle_copy: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    hann_only_bundle(bundle_copy)
    with pytest.raises(ExportError, match=r"hann \(HannWindow\).*TensorRT 10.3"):
        build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    assert calls(fake_trt, "parse_from_file") == []
    monkeypatch.setattr(fake_trt, "__version__", "10.15.1.29")
    assert build_engine(bundle_copy, TrtBuildOptions(precision="fp32")).details["operator_table"] == "10.15"


def test_engine_from_a_replaced_onnx_is_refused_with_rebuild(fake_trt: ModuleType, bundle_copy: Path) -> None:
    build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    source = bundle_copy / open_bundle(bundle_copy).model("fp32").path
    model = onnx.load(str(source))
    helper.set_model_props(model, {"re-exported": "yes"})
    onnx.save(model, str(source))
    write_manifest(bundle_copy, open_bundle(bundle_copy, verify=False).manifest)
    with pytest.raises(BackendError, match="another version of audio_encoder.fp32.onnx") as raised:
        TrtBackend(open_bundle(bundle_copy), "fp32")
    assert "biolingual-export trt" in raised.value.hint and "rebuild" in raised.value.hint


def test_engine_whose_source_model_is_gone_is_refused(fake_trt: ModuleType, bundle_copy: Path) -> None:
    entry = build_engine(bundle_copy, TrtBuildOptions(precision="fp32"))
    bundle = open_bundle(bundle_copy)
    details = {**entry.details, "source_model": "fp16"}
    models = {**bundle.manifest.models, "trt-fp32": dataclasses.replace(entry, details=details)}
    with pytest.raises(BackendError, match="no longer has"):
        TrtBackend(dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, models=models)), "fp32")


def run_export(args: list[str], blocked: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=120)


def test_tensorrt_whose_libraries_do_not_load_is_a_one_line_error(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text(
        "raise OSError('libnvinfer.so.10: cannot open shared object file: No such file or directory')\n")
    result = run_export(["trt", "--bundle", str(tiny_bundle), "--precision", "fp32"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "cannot load its libraries" in result.stderr and "Traceback" not in result.stderr


def test_trt_without_onnx_is_a_one_line_error(tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnx'\", name='onnx')\n")
    for entry in FAKE_GPU.iterdir():
        if entry.is_dir():
            os.symlink(entry, tmp_path / entry.name)
    result = run_export(["trt", "--bundle", str(tiny_bundle), "--precision", "fp32"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "needs the onnx package" in result.stderr and "biolingual-edge[tensorrt]" in result.stderr
    assert "Traceback" not in result.stderr
