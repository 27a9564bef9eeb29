"""The GPU check, prepared to run as one command on a machine with an NVIDIA GPU (see gpu_check.sh).

With TensorRT: a bundle from the tiny random checkpoint, fp16 and INT8 (TensorRT form) ONNX, fp16/int8/fp32
engines, ``verify`` against ONNX Runtime, ``bench`` of every engine beside ORT fp32, and ``pytest -m gpu``.
Without TensorRT but with CUDA, torch and cuda-python: the cuda-python buffer and stream code of the
TensorRT backend (edge/model/backends/device_buffers.py) with torch standing in for the engine and as the
numerical reference. Every step is recorded as passed, failed or not run (with the reason) in one JSON
report, rewritten after each step so a timeout still leaves what ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", "450"))
"""Whole-run budget; gpu_check.sh kills the run 30 s later (480 s by default), so the report is written first."""
TAIL_CHARS = 1500
BUFFER_MAX_ABS = 1e-5
"""torch fp32 on the GPU vs the same result through our buffers: a copy, so only rounding of the reference."""
SAMPLE_RATE = 48_000
SYNTHETIC_SECONDS = 30
ENGINE_PRECISIONS = ("fp16", "int8", "fp32")
FIELD_AUDIO = "field recordings"
CHECK_LABELS = ("great plains toad", "eurasian magpie", "ruffed grouse", "rain", "wind")
NOTHING_RAN = 3
"""Exit status when no check could run here (no GPU, or none of its libraries): not a pass."""


class Report:
    """Steps and environment facts, written to ``path`` after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = time.monotonic()
        self.data: dict[str, Any] = {"environment": {}, "steps": [], "not_run": []}

    def left_s(self) -> float:
        return BUDGET_S - (time.monotonic() - self.started)

    def step(self, name: str, status: str, detail: str, seconds: float = 0.0, **extra: Any) -> None:
        self.data["steps"].append({"step": name, "status": status, "detail": detail[-TAIL_CHARS:],
                                   "seconds": round(seconds, 1), **extra})
        if status == "not_run":
            self.data["not_run"].append(f"{name}: {detail}")
        self.write()

    def write(self) -> None:
        statuses = [s["status"] for s in self.data["steps"]]
        self.data["summary"] = {k: statuses.count(k) for k in ("passed", "failed", "not_run")}
        self.path.write_text(json.dumps(self.data, indent=2), encoding="utf-8")


def importable(name: str) -> str | None:
    """None when ``name`` imports, else the reason."""
    try:
        module = importlib.import_module(name)
    except Exception as e:  # a broken GPU library raises OSError/RuntimeError, not only ImportError
        return f"{type(e).__name__}: {e}"
    if name == "tensorrt" and not hasattr(module, "Builder"):
        return "only tensorrt-stubs (no library)"
    return None


def environment(report: Report) -> dict[str, str | None]:
    """What is here: GPU, CUDA via torch, cuda-python, TensorRT, and the project's own dependencies."""
    smi = shutil.which("nvidia-smi")
    gpu = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False).stdout.strip() if smi else ""
    missing = {name: importable(name) for name in ("torch", "tensorrt", "onnxruntime", "onnx", "transformers",
                                                   "typer", "pydantic", "soundfile")}
    cuda = None
    if missing["torch"] is None:
        import torch

        cuda = None if torch.cuda.is_available() else "torch sees no CUDA device"
    try:
        from edge.model.backends.trt_api import load_cudart

        load_cudart()
        missing["cuda-python"] = None
    except Exception as e:  # noqa: BLE001 - recorded, not raised
        missing["cuda-python"] = str(e)
    missing["torch.cuda"] = cuda if missing["torch"] is None else "no torch"
    report.data["environment"] = {"gpu": gpu or "no nvidia-smi / no GPU", "python": sys.version.split()[0],
                                  "missing": {k: v for k, v in missing.items() if v}}
    report.write()
    return missing


def cuda_buffers(report: Report) -> None:
    """Our upload/download/stream code around a torch computation on the device, checked against torch."""
    import torch

    from edge.errors import BackendError
    from edge.model.backends.device_buffers import DeviceBuffers
    from edge.model.backends.trt_api import cuda_call, gpu_identity, load_cudart

    started = time.monotonic()
    cudart = load_cudart()
    name, capability = gpu_identity(cudart)
    frames, mels, dim, capacity = 1001, 64, 512, 4
    weights = torch.randn(mels, dim, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    buffers = DeviceBuffers(cudart, (capacity, 1, frames, mels), (capacity, dim))
    d2d = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    worst = 0.0
    try:
        for batch in (1, capacity, 2):
            features = np.random.default_rng(batch).standard_normal((batch, 1, frames, mels)).astype(np.float32)
            host = buffers.upload(features)
            buffers.synchronize()
            on_device = torch.empty(host.shape, device="cuda")
            device_in, device_out = buffers.addresses()
            cuda_call(cudart, cudart.cudaMemcpy(on_device.data_ptr(), device_in, host.nbytes, d2d))
            result = torch.nn.functional.normalize(on_device.mean(dim=(1, 2)) @ weights, dim=1).contiguous()
            torch.cuda.synchronize()
            cuda_call(cudart, cudart.cudaMemcpy(device_out, result.data_ptr(), result.numel() * 4, d2d))
            out = buffers.download(batch).copy()
            buffers.synchronize()
            reference = torch.nn.functional.normalize(torch.from_numpy(features).cuda().mean(dim=(1, 2)) @ weights,
                                                      dim=1).cpu().numpy()
            worst = max(worst, float(np.abs(out - reference).max()))
        try:
            buffers.upload(np.zeros((capacity + 1, 1, frames, mels), np.float32))
            oversize = "oversize batch was accepted"
        except BackendError:
            oversize = ""
    finally:
        buffers.close()
    passed = worst <= BUFFER_MAX_ABS and not oversize
    report.step("cuda_buffers", "passed" if passed else "failed",
                f"{name} (compute {capability}): batches 1/{capacity}/2 through DeviceBuffers vs torch, max abs "
                f"{worst:.2e} (gate {BUFFER_MAX_ABS:g}) {oversize}", time.monotonic() - started, max_abs=worst)


def run(report: Report, name: str, args: list[str], cwd: Path,
        share: float = 1.0) -> subprocess.CompletedProcess[str] | None:
    """One CLI step with what is left of the budget (``share`` of it); recorded, never raised."""
    left = report.left_s() * share
    if left < 10:
        report.step(name, "not_run", "time budget of the check used up")
        return None
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=left,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        report.step(name, "failed", f"timed out after {left:.0f} s", time.monotonic() - started)
        return None
    output = (done.stdout + done.stderr).strip()
    report.step(name, "passed" if done.returncode == 0 else "failed", output, time.monotonic() - started,
                command=" ".join(args))
    return done


def synthetic_audio(folder: Path) -> Path:
    """Seeded noise with tone sweeps, as WAV files (when no field recordings came with the checkout)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(SYNTHETIC_SECONDS * SAMPLE_RATE) / SAMPLE_RATE
    for i in range(3):
        sweep = np.sin(2 * np.pi * (1000 + 300 * i) * t * (1 + t / SYNTHETIC_SECONDS))
        sf.write(folder / f"synthetic_{i}.wav", (0.05 * rng.standard_normal(t.size) + 0.2 * sweep) * 0.5,
                 SAMPLE_RATE)
    return folder


def field_audio(work: Path) -> tuple[Path, str]:
    candidates = (os.environ.get("BIOLINGUAL_SHARED_AUDIO"), REPO / "shared" / "audio",
                  REPO.parent / "shared" / "audio")
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate), FIELD_AUDIO
    return synthetic_audio(work / "audio"), "synthetic audio (no field recordings in this checkout)"


def tensorrt_path(report: Report, work: Path) -> None:
    """Bundle -> fp16 / int8-trt ONNX -> three engines -> verify -> bench -> pytest -m gpu."""
    audio, kind = field_audio(work)
    report.data["environment"]["audio"] = kind
    bundle, checkpoint, calibration = work / "bundle", work / "checkpoint", work / "calibration"
    labels = work / "labels.txt"
    labels.write_text("\n".join(CHECK_LABELS) + "\n", encoding="utf-8")  # verify ranks labels: it needs some
    steps: list[tuple[str, list[str], float]] = [
        ("random_checkpoint", ["-m", "export", "random-checkpoint", "--out", str(checkpoint)], 0.2),
        ("export_onnx", ["-m", "export", "onnx", "--out", str(bundle), "--model", str(checkpoint),
                         "--parity-audio", str(audio)], 0.5),
        ("labels", ["-m", "export", "labels", "--bundle", str(bundle), "--model", str(checkpoint),
                    "--labels", str(labels)], 0.2),
        ("calibrate", ["-m", "export", "calibrate", "--audio", str(audio), "--bundle", str(bundle),
                       "--out", str(calibration), "--windows", "48"], 0.2),
        ("quantize_fp16", ["-m", "export", "quantize", "--bundle", str(bundle), "--precision", "fp16"], 0.2),
        ("quantize_int8_trt", ["-m", "export", "quantize", "--bundle", str(bundle), "--calibration",
                               str(calibration), "--target", "trt"], 0.3),
    ]
    steps += [(f"engine_{p}", ["-m", "export", "trt", "--bundle", str(bundle), "--precision", p, "--max-batch", "4"],
               0.35) for p in ENGINE_PRECISIONS]
    for name, args, share in steps:
        done = run(report, name, args, REPO, share)
        if (done is None or done.returncode != 0) and not name.startswith("engine_"):
            report.step("tensorrt_rest", "not_run", f"stopped after {name} did not pass")
            return
    run(report, "verify_engines_vs_ort", ["-m", "export", "verify", "--bundle", str(bundle), "--audio", str(audio),
                                          "--max-windows", "32"], REPO, 0.4)
    keys = [f"trt-{p}" for p in ENGINE_PRECISIONS if (bundle / "manifest.json").is_file()
            and f'"trt-{p}"' in (bundle / "manifest.json").read_text()]
    bench = ["-m", "edge", "bench", "--bundle", str(bundle), "--batch", "1,4", "--windows", "8", "--json",
             "--precision", "fp32"] + [a for k in keys for a in ("--precision", k)]
    done = run(report, "bench_engines_and_ort", bench, REPO, 0.4)
    if done is not None and done.returncode == 0:
        report.data["bench"] = json.loads(done.stdout)
        report.write()
    if kind != FIELD_AUDIO:  # the gpu tests calibrate and gate on named folders of the shared recordings
        report.step("pytest_gpu", "not_run", "needs the field recordings (../shared/audio or BIOLINGUAL_SHARED_AUDIO)")
        return
    os.environ["BIOLINGUAL_SHARED_AUDIO"] = str(audio)
    done = run(report, "pytest_gpu", ["-m", "pytest", "-m", "gpu", "-q", "-x", "tests/export/test_trt_gpu.py"],
               REPO, 0.9)
    if done is not None and done.returncode == 0 and " passed" not in done.stdout:
        step = report.data["steps"][-1]  # every gpu test skipped: nothing was proven
        step["status"] = "not_run"
        report.data["not_run"].append(f"pytest_gpu: every gpu test was skipped ({step['detail'][-200:]})")
        report.write()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    report = Report(parser.parse_args().report)
    missing = environment(report)
    cuda_ready = not (missing.get("torch") or missing.get("torch.cuda") or missing.get("cuda-python"))
    checks: list[tuple[str, bool, str, Callable[[], None]]] = [
        ("cuda_buffers", cuda_ready, "needs torch with CUDA and cuda-python", lambda: cuda_buffers(report)),
    ]
    for name, ready, needs, check in checks:
        if not ready:
            report.step(name, "not_run", needs)
            continue
        try:
            check()
        except Exception as e:  # noqa: BLE001 - a crash is a failed step, recorded with its reason
            report.step(name, "failed", f"{type(e).__name__}: {e}")
    trt_needs = [k for k in ("tensorrt", "cuda-python", "onnx", "onnxruntime", "torch", "transformers", "typer",
                             "pydantic", "soundfile") if missing.get(k)]
    if trt_needs:
        report.step("tensorrt_path", "not_run", "could not build or run any engine: missing "
                    + ", ".join(f"{k} ({missing[k]})" for k in trt_needs))
    else:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
            tensorrt_path(report, Path(work))
    report.write()
    summary = report.data["summary"]
    print(json.dumps(summary), "report:", report.path)
    if summary["failed"]:
        return 1
    return 0 if summary["passed"] else NOTHING_RAN


if __name__ == "__main__":
    sys.exit(main())
