"""ONNX Runtime CPU speed and peak memory of the fp32 / fp16 / int8 encoders of one bundle, in one run.

Each measurement is a fresh subprocess (so peak RSS is that model's alone); rounds alternate the models so
a shared machine slows them alike, and the best round of each is kept. Ratios are against the fp32 of
the same run. Besides wall time, the model thread's CPU time is reported: on a machine shared with other
tenants it is the steadier figure (it does not count time spent waiting for a core). The header prints
the CPU, its INT8-relevant features and the load average. Default: the full-size random-weight
checkpoint (BioLingual's shape). ``--onnx NAME=FILE`` adds any other encoder file (e.g. an INT8 made by
an older recipe) run with the same session settings; ``NAME=FILE@ieee`` runs it without flushing
subnormals (the runtime before it did).

    python benchmarks/precision_cpu.py --workdir runs/precision-bench [--windows 8] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")
KIB = 1024


def _file_embed(spec: str, threads: int) -> Any:
    """An embed function over a bare ONNX file with OrtBackend's session settings (``FILE@ieee``: without
    flushing subnormals, as before ``edge.model.backends.denormals``)."""
    from contextlib import nullcontext

    import onnxruntime as ort

    from edge.model.backends.denormals import flush_denormals, keep_float_mode

    path, _, mode = spec.partition("@")
    flush = flush_denormals if mode != "ieee" else nullcontext
    options = ort.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "0" if mode == "ieee" else "1")
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    with keep_float_mode():
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def embed(features: np.ndarray) -> np.ndarray:
        with flush():
            return session.run(None, {name: features})[0]
    return embed


def measure(bundle: Path, model: str, windows: int, batch: int, threads: int) -> dict[str, float]:
    """Child process: load one model, warm up, time ``windows`` windows of real-shaped features."""
    from edge.model.backends.ort import OrtBackend
    from edge.model.bundle import open_bundle

    opened = open_bundle(bundle)
    embed = _file_embed(model, threads) if os.sep in model else OrtBackend(opened, model, threads=threads).embed
    params = opened.manifest.frontend
    features = np.random.default_rng(0).normal(-40, 20, (batch, 1, params.n_frames, params.n_mels)).astype(np.float32)
    embed(features)
    calls = max(1, windows // batch)
    start, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        embed(features)
    cpu, elapsed = time.thread_time() - cpu, time.perf_counter() - start
    return {"ms_per_window": 1000 * elapsed / (calls * batch), "cpu_ms_per_window": 1000 * cpu / (calls * batch),
            "peak_rss_mb": peak_rss_kib() / KIB}


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss it is not inherited across fork/exec
    from the parent, which holds torch and the checkpoint."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def prepare(workdir: Path, audio: Path, size: str) -> Path:
    from calibration.dataset import build_calibration_set
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.quantize import QuantizeOptions, add_precision
    from export.synthetic import build_checkpoint

    bundle = workdir / "bundle"
    if not (bundle / "manifest.json").is_file():
        checkpoint = load_checkpoint(str(build_checkpoint(workdir / "checkpoint", size)))
        export_fp32_bundle(checkpoint, bundle, audio)
        data = build_calibration_set([audio], checkpoint.frontend, count=64, seed=0)
        add_precision(bundle, None, QuantizeOptions(precision="fp16"))
        add_precision(bundle, data, QuantizeOptions(precision="int8", target="ort"))
    return bundle


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    from edge.ops.bench import machine_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "precision-bench")
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    parser.add_argument("--precision", action="append", help="bundle precisions to run (default fp32 fp16 int8)")
    parser.add_argument("--onnx", action="append", default=[], metavar="NAME=FILE", help="also run this file")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.workdir / "bundle", args.child, args.windows, args.batch, args.threads)))
        return
    args.audio = args.audio or shared_audio()
    prepare(args.workdir, args.audio, args.size)
    models = {p: p for p in (args.precision or PRECISIONS)}
    for spec in args.onnx:
        name, _, file = spec.partition("=")
        path, at, mode = file.partition("@")
        models[name] = str(Path(path).resolve()) + at + mode
    info = machine_info()
    load_before = load_average()
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            out = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--windows",
                                  str(args.windows), "--batch", str(args.batch), "--threads", str(args.threads),
                                  "--child", model],
                                 check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            kept = best.setdefault(name, row)
            best[name] = {k: min(kept[k], row[k]) for k in row}
    print(f"CPU: {info['cpu']}, {info['cores']} cores; INT8 features: {info['int8_flags']}; ONNX Runtime "
          f"{info['onnxruntime']}; load average {load_before} -> {load_average()}; batch {args.batch}, "
          f"{args.threads} thread(s), best of {args.rounds} alternating rounds")
    print("| model | ms/window | × fp32 speed | CPU ms/window | × fp32 speed (CPU) | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    base = best.get("fp32") or next(iter(best.values()))
    for name, r in best.items():
        print(f"| {name} | {r['ms_per_window']:.1f} | {base['ms_per_window'] / r['ms_per_window']:.2f} "
              f"| {r['cpu_ms_per_window']:.1f} | {base['cpu_ms_per_window'] / r['cpu_ms_per_window']:.2f} "
              f"| {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "load_average": [load_before, load_average()],
                                         "results": best}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
