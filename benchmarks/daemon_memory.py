"""Where the INT8 daemon's peak RSS goes, stage by stage, with and without ``model.low_memory``, in one run.

Each configuration runs in a fresh interpreter (VmHWM is per process): imports, the INT8 session, one
window's log-mel, the first inference, a batch of 4, then the real ``biolingual-edge run --input --fast``
daemon on one minute of the 10-minute recording, whose own heartbeat reports its peak. The default
configuration is the baseline; the ratio is low_memory / default.

    python benchmarks/daemon_memory.py [--workdir /tmp/scale-bench] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RATE = 48_000
MINUTE_S = 60


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM (Linux only)")


def stages_child(bundle: str, recording: str, low_memory: bool) -> None:
    """Peak RSS after each stage, as JSON on stdout (runs in its own interpreter)."""
    marks = {"python": vm_hwm_mb()}
    import edge.cli  # noqa: F401  (what the daemon process imports before it starts)

    marks["imports (edge.cli)"] = vm_hwm_mb()
    from edge.audio.files import read_file
    from edge.audio.windowing import clip_windows
    from edge.model.backends.ort import OrtBackend
    from edge.model.bundle import open_bundle
    from edge.model.frontend_stream import StreamingLogMel

    opened = open_bundle(bundle)
    marks["+ onnxruntime import"] = vm_hwm_mb()
    backend = OrtBackend(opened, "int8", threads=1, low_memory=low_memory)
    marks["+ INT8 session"] = vm_hwm_mb()
    windows = clip_windows(read_file(Path(recording), RATE)[: 30 * RATE], 10 * RATE, 5 * RATE)
    frontend = StreamingLogMel(opened.manifest.frontend)
    features = frontend.batch(windows[:4])
    marks["+ audio and log-mel of 4 windows"] = vm_hwm_mb()
    backend.embed(features[:1])
    marks["+ first inference (1 window)"] = vm_hwm_mb()
    backend.embed(features)
    marks["+ a batch of 4"] = vm_hwm_mb()
    print(json.dumps(marks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "audio")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        stages_child(args.child[0], args.child[1], args.child[2] == "1")
        return

    import soundfile as sf
    from analyze_scale import bench_inputs
    from daemon_fast import daemon_run

    bundle, labels, recording = bench_inputs(args.workdir, args.audio, 10)
    minute = args.workdir / "one-minute.wav"
    samples, rate = sf.read(recording, frames=MINUTE_S * RATE, dtype="float32")
    sf.write(minute, samples, rate, subtype="PCM_16")
    results: dict[str, Any] = {}
    for name, low_memory in (("default", False), ("low_memory", True)):
        out = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(minute), str(int(low_memory))],
                             check=True, capture_output=True, text=True, cwd=REPO).stdout
        marks = json.loads(out.strip().splitlines()[-1])
        log_dir = args.workdir / f"memory-{name}"
        if log_dir.exists():
            import shutil

            shutil.rmtree(log_dir)
        daemon = daemon_run(bundle, labels, minute, "int8", log_dir, 1, low_memory)
        results[name] = {"stages_mb": marks, "daemon_peak_rss_mb": daemon["peak_rss_mb"], "daemon_rtf": daemon["rtf"]}
    print("\n| stage (cumulative peak RSS, MB) | default | low_memory |\n|---|---|---|")
    for stage in results["default"]["stages_mb"]:
        print(f"| {stage} | {results['default']['stages_mb'][stage]:.0f} | "
              f"{results['low_memory']['stages_mb'][stage]:.0f} |")
    for key, label in (("daemon_peak_rss_mb", "daemon `run --input --fast`, peak RSS MB"),
                       ("daemon_rtf", "daemon real-time ×")):
        print(f"| {label} | {results['default'][key]:.0f} | {results['low_memory'][key]:.0f} |")
    ratio = results["low_memory"]["daemon_peak_rss_mb"] / results["default"]["daemon_peak_rss_mb"]
    print(f"\nlow_memory / default daemon peak RSS: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
