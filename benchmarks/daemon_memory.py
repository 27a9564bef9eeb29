"""Where the INT8 daemon's peak RSS goes, stage by stage, with and without ``model.low_memory``, in one run.

Each configuration runs in a fresh interpreter (VmHWM is per process): imports, the INT8 session, one
window's log-mel, the first inference, a batch of 4; then the real ``biolingual-edge run --input --fast``
daemon on the 10-minute recording under ``/usr/bin/time -v`` (its "Maximum resident set size" is the
figure; the daemon's own heartbeat peak is shown next to it). Also per configuration: real-time factor,
time to the first analysed window after start (the first heartbeat that counts a window: 1 s resolution)
and the detections, which must be identical across configurations. The default configuration is the
baseline; the ratio is low_memory / default.

    python benchmarks/daemon_memory.py [--workdir /tmp/scale-bench] [--threshold -0.4] [--json out.json]
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


def time_v_run(command: list[str]) -> tuple[float, float]:
    """Run ``command`` under ``/usr/bin/time -v``: (wall seconds, maximum resident set size in MB)."""
    import os
    import time

    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"daemon failed ({done.returncode}):\n{done.stderr[-2000:]}")
    line = next(li for li in done.stderr.splitlines() if "Maximum resident set size" in li)
    return wall, int(line.rsplit(":", 1)[1]) / 1024


def daemon_10min(bundle: Path, labels: Path, recording: Path, log_dir: Path, low_memory: bool,
                 threshold: float) -> dict[str, Any]:
    """One `run --input --fast` of the whole recording under /usr/bin/time -v, and what its card says."""
    import shutil

    from daemon_fast import daemon_command

    from desk.collect.cards import read_card

    shutil.rmtree(log_dir, ignore_errors=True)
    wall, max_rss = time_v_run(daemon_command(bundle, labels, recording, "int8", log_dir, 1, low_memory, threshold))
    card = read_card(log_dir)
    health = [record for record, _ in card.health]
    first = min((h["uptime_s"] for h in health if h["windows_analysed"] >= 1), default=float("nan"))
    columns = card.detections.columns
    kept = [i for i, c in enumerate(columns) if c in ("label", "score", "start_sample", "end_sample",
                                                       "peak_start_sample", "windows")]
    return {"wall_s": wall, "max_rss_mb": max_rss, "heartbeat_peak_rss_mb": max(h["peak_rss_mb"] for h in health),
            "rtf": health[-1]["analysed_until_s"] / wall, "windows": health[-1]["windows_analysed"],
            "first_window_uptime_s": first, "detections": [[row[i] for i in kept] for row in card.detections.rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "audio")
    parser.add_argument("--threshold", type=float, default=-0.4,
                        help="detection threshold (random weights score near -0.4; pick one that gives detections)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        stages_child(args.child[0], args.child[1], args.child[2] == "1")
        return

    import os

    import soundfile as sf
    from analyze_scale import bench_inputs

    from edge.ops.bench import machine_info

    bundle, labels, recording = bench_inputs(args.workdir, args.audio, 10)
    minute = args.workdir / "one-minute.wav"
    samples, rate = sf.read(recording, frames=MINUTE_S * RATE, dtype="float32")
    sf.write(minute, samples, rate, subtype="PCM_16")
    results: dict[str, Any] = {}
    for name, low_memory in (("default", False), ("low_memory", True)):
        out = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(minute), str(int(low_memory))],
                             check=True, capture_output=True, text=True, cwd=REPO).stdout
        marks = json.loads(out.strip().splitlines()[-1])
        daemon = daemon_10min(bundle, labels, recording, args.workdir / f"memory-{name}", low_memory, args.threshold)
        results[name] = {"stages_mb": marks, **daemon}
    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; INT8 features: {info['int8_flags']}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("\n| stage (cumulative peak RSS, MB) | default | low_memory |\n|---|---|---|")
    for stage in results["default"]["stages_mb"]:
        print(f"| {stage} | {results['default']['stages_mb'][stage]:.0f} | "
              f"{results['low_memory']['stages_mb'][stage]:.0f} |")
    for key, label, fmt in (("max_rss_mb", "**daemon, 10 min, `/usr/bin/time -v` max RSS MB**", ".1f"),
                            ("heartbeat_peak_rss_mb", "daemon's own heartbeat peak RSS MB", ".1f"),
                            ("rtf", "daemon real-time ×", ".1f"),
                            ("first_window_uptime_s", "first analysed window, s after start (heartbeat)", ".1f")):
        print(f"| {label} | {results['default'][key]:{fmt}} | {results['low_memory'][key]:{fmt}} |")
    same = results["default"]["detections"] == results["low_memory"]["detections"]
    print(f"\ndetections: {len(results['default']['detections'])} (default) / "
          f"{len(results['low_memory']['detections'])} (low_memory), identical: {same}")
    ratio = results["low_memory"]["max_rss_mb"] / results["default"]["max_rss_mb"]
    print(f"low_memory / default daemon peak RSS: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
