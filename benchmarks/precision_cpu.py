"""ONNX Runtime CPU speed and peak memory of the fp32 / fp16 / int8 encoders of one bundle, in one run.

Each precision runs in its own subprocess (so peak RSS is that precision's alone); ratios are against the
fp32 measured in the same run. Default: the full-size random-weight checkpoint (BioLingual's shape).

    python benchmarks/precision_cpu.py --workdir runs/precision-bench [--windows 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PRECISIONS = ("fp32", "fp16", "int8")
KIB = 1024


def measure(bundle: Path, precision: str, windows: int, batch: int, threads: int) -> dict[str, float]:
    """Child process: load one precision, warm up, time ``windows`` windows of real-shaped features."""
    from edge.model.backends.ort import OrtBackend
    from edge.model.bundle import open_bundle

    opened = open_bundle(bundle)
    backend = OrtBackend(opened, precision, threads=threads)
    params = opened.manifest.frontend
    features = np.random.default_rng(0).normal(-40, 20, (batch, 1, params.n_frames, params.n_mels)).astype(np.float32)
    backend.embed(features)
    start = time.perf_counter()
    for _ in range(max(1, windows // batch)):
        backend.embed(features)
    elapsed = time.perf_counter() - start
    return {"ms_per_window": 1000 * elapsed / (max(1, windows // batch) * batch),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "precision-bench")
    parser.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "audio")
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.workdir / "bundle", args.child, args.windows, args.batch, args.threads)))
        return
    prepare(args.workdir, args.audio, args.size)
    results = {}
    for precision in PRECISIONS:
        out = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--windows", str(args.windows),
                              "--batch", str(args.batch), "--threads", str(args.threads), "--child", precision],
                             check=True, capture_output=True, text=True)
        results[precision] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["fp32"]
    print(f"{'precision':<10}{'ms/window':>12}{'x fp32':>9}{'peak RSS MB':>14}{'x fp32':>9}")
    for precision, r in results.items():
        print(f"{precision:<10}{r['ms_per_window']:>12.1f}{r['ms_per_window'] / base['ms_per_window']:>9.2f}"
              f"{r['peak_rss_mb']:>14.0f}{r['peak_rss_mb'] / base['peak_rss_mb']:>9.2f}")


if __name__ == "__main__":
    main()
