"""INT8 sessions take ORT's exact u8×u8 kernels (``session.x64quantprecision=1``) on x86 CPUs without VNNI, where
its u8×s8 kernels saturate int16 pairs, and only there; ARM needs nothing. The decision comes from the CPU flags."""

from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.audio.files import read_file
from edge.audio.windowing import clip_windows
from edge.model.backends import int8_path
from edge.model.backends.int8_path import (
    EXACT_X86_FLAGS,
    PRECISION_KEY,
    X86_MACHINES,
    IntegerPath,
    cpu_flags,
    integer_path,
    keep_int8_exact,
    read_cpuinfo,
)
from edge.model.backends.ort import OrtBackend
from edge.model.bundle import open_bundle
from edge.model.frontend_stream import StreamingLogMel
from edge.ops.bench import machine_info
from export.quantize import ort_session

BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall " \
       "nx lm constant_tsc pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand"
CPUS = {  # /proc/cpuinfo as such machines write it (one core shown), and whether INT8 needs the exact path
    "AMD EPYC 7742 (Zen 2)": (f"model name\t: AMD EPYC 7742 64-Core Processor\nflags\t\t: {BASE} avx2 bmi2 sha_ni",
                              "x86_64", True),
    "Xeon Gold 6148 (Skylake-SP, AVX-512 without VNNI)": (
        f"flags\t\t: {BASE} avx2 avx512f avx512dq avx512cd avx512bw avx512vl", "x86_64", True),
    "Xeon Gold 6248 (Cascade Lake)": (f"flags\t\t: {BASE} avx2 avx512f avx512bw avx512vl avx512_vnni", "x86_64",
                                      False),
    "Core i7-12700 (Alder Lake, AVX-VNNI only)": (f"flags\t\t: {BASE} avx2 avx_vnni", "x86_64", False),
    "Xeon 8480 (Sapphire Rapids)": (f"flags\t\t: {BASE} avx2 avx512_vnni amx_tile amx_int8", "x86_64", False),
    "Raspberry Pi 4 (Cortex-A72)": ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nModel\t: Raspberry Pi 4",
                                    "aarch64", False),
    "Raspberry Pi 5 (Cortex-A76)": ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                    "cpuid asimdrdm lrcpc dcpop asimddp", "aarch64", False),
}


@pytest.mark.parametrize("name", list(CPUS))
def test_the_exact_path_is_taken_on_x86_without_vnni_only(name: str) -> None:
    cpuinfo, machine, exact = CPUS[name]
    path = integer_path(cpuinfo, machine)
    assert path.exact_u8u8 is exact
    options = ort.SessionOptions()
    keep_int8_exact(options, path)
    if exact:
        assert options.get_session_config_entry(PRECISION_KEY) == "1"
        assert PRECISION_KEY in path.description
    else:
        with pytest.raises(RuntimeError):  # not set: ORT's default kernels
            options.get_session_config_entry(PRECISION_KEY)


def test_unknown_flags_keep_ort_default_and_say_so() -> None:
    path = integer_path("", "x86_64")
    assert not path.exact_u8u8
    assert "unknown" in path.description


def test_the_decision_is_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8_path, "_said", set())
    no_vnni = integer_path(CPUS["AMD EPYC 7742 (Zen 2)"][0], "x86_64")
    with caplog.at_level(logging.INFO, logger="edge.model.backends.int8_path"):
        for _ in range(3):
            keep_int8_exact(ort.SessionOptions(), no_vnni)
    assert [r.getMessage() for r in caplog.records] == [f"INT8 integer path: {no_vnni.description}"]


def test_bench_header_names_the_integer_path() -> None:
    assert machine_info()["int8_path"] == integer_path().description


def test_the_exact_path_changes_the_kernels_not_the_answers_on_this_cpu(
        precision_bundle: Path, shared_audio: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real INT8 session built with the option gives the same embeddings as without it where the CPU has VNNI
    (both paths are exact there), and the option really rewrote the weights (so the comparison is not vacuous)."""
    if platform.machine().lower() not in X86_MACHINES or not cpu_flags(read_cpuinfo()) & set(EXACT_X86_FLAGS):
        pytest.skip(f"needs an x86 CPU with VNNI/AMX-INT8 ({integer_path().description})")
    bundle = open_bundle(precision_bundle)
    recording = next(iter(sorted(shared_audio.rglob("*.wav"))))
    rate = bundle.manifest.frontend.sampling_rate
    windows = clip_windows(read_file(recording, rate)[: 40 * rate], 10 * rate, 5 * rate)
    features = StreamingLogMel(bundle.manifest.frontend).batch(windows)
    default = OrtBackend(bundle, "int8", threads=1)
    monkeypatch.setattr(int8_path, "integer_path", lambda: IntegerPath(True, "as on a CPU without VNNI"))
    exact = OrtBackend(bundle, "int8", threads=1)
    assert exact._session.get_session_options().get_session_config_entry(PRECISION_KEY) == "1"
    np.testing.assert_array_equal(exact.embed(features), default.embed(features))
    gate = ort_session(bundle.root / exact.model_file, "int8")  # quantize's and verify's gates measure the same
    assert gate.get_session_options().get_session_config_entry(PRECISION_KEY) == "1"

    rewritten = {}
    for flag in ("0", "1"):
        options = ort.SessionOptions()
        options.add_session_config_entry(PRECISION_KEY, flag)
        options.optimized_model_filepath = str(tmp_path / f"optimised-{flag}.onnx")
        ort.InferenceSession(str(bundle.root / exact.model_file), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
        rewritten[flag] = sum(t.name.endswith("_s8_2_u8") for t in graph.initializer)
    assert rewritten["0"] == 0 < rewritten["1"]


def test_the_int8_text_encoder_takes_the_same_path(text_bundle: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Dynamic INT8 (u8 activations × s8 weights) in the text tower: the option where needed, the same answers."""
    from edge.scoring.text_encoder import TextEncoder
    from export.text_int8 import quantize_text_dynamic
    from export.text_onnx import TEXT_FILES, register_text_encoder

    if platform.machine().lower() not in X86_MACHINES or not cpu_flags(read_cpuinfo()) & set(EXACT_X86_FLAGS):
        pytest.skip(f"needs an x86 CPU with VNNI/AMX-INT8 ({integer_path().description})")
    copy = Path(shutil.copytree(text_bundle, tmp_path / "bundle"))
    bundle = open_bundle(copy)
    quantize_text_dynamic(copy / TEXT_FILES["fp32"], copy / TEXT_FILES["int8"])
    fp32 = bundle.manifest.text_encoders["fp32"]
    register_text_encoder(bundle, "int8", replace(fp32, path=TEXT_FILES["int8"], precision="int8"))
    texts = ["great plains toad", "the sound of a barn owl", "wind noise"]
    default = TextEncoder.from_bundle(copy, "int8", force_precision=True)
    monkeypatch.setattr(int8_path, "integer_path", lambda: IntegerPath(True, "as on a CPU without VNNI"))
    exact = TextEncoder.from_bundle(copy, "int8", force_precision=True)
    assert exact._session.get_session_options().get_session_config_entry(PRECISION_KEY) == "1"
    with pytest.raises(RuntimeError):
        default._session.get_session_options().get_session_config_entry(PRECISION_KEY)
    np.testing.assert_array_equal(exact.embed(texts), default.embed(texts))
