"""The field daemon on a 10-minute recording with ``--fast``: real-time factor, lag, peak RSS, CPU %.

One run, the same recording: the reference pipeline (ClapFeatureExtractor + torch, fp32, same window grid)
as the baseline, then ``biolingual-edge run --input REC --fast`` as a real subprocess per precision in the
bundle (fp32, int8 …), each reported as a ratio to the reference. Full-size random checkpoint (BioLingual's
architecture); its bundle is built once into --workdir (with fp16/int8 via benchmarks/precision_cpu.py).

    python benchmarks/daemon_fast.py [--workdir /tmp/pq/bench] [--minutes 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

RATE = 48_000
LABELS = ("Great Plains Toad", "Eurasian Magpie", "Ruffed Grouse", "Golden-winged Warbler", "Storm Petrel")


def long_recording(audio: Path, minutes: float, out: Path) -> Path:
    """The shared recordings (48 kHz mono), concatenated and repeated to ``minutes``."""
    from edge.audio.files import find_audio_files, read_file

    pieces, total, target = [], 0, int(minutes * 60 * RATE)
    files = find_audio_files([audio])
    while total < target:
        for path in files:
            samples = read_file(path, RATE)
            pieces.append(samples)
            total += samples.shape[0]
            if total >= target:
                break
    sf.write(out, np.concatenate(pieces)[:target], RATE, subtype="PCM_16")
    return out


def ensure_labels(bundle: Path, checkpoint: Path, labels_path: Path) -> None:
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels
    from export.checkpoint import load_checkpoint
    from export.labels import DEFAULT_TEMPLATE, store_label_set, text_embeddings

    labels_path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    labels = read_labels(labels_path)
    opened = open_bundle(bundle)
    if labels.key not in opened.manifest.label_sets:
        embeddings = text_embeddings(load_checkpoint(str(checkpoint)), labels, (DEFAULT_TEMPLATE,))
        store_label_set(opened, labels, embeddings, "text", (DEFAULT_TEMPLATE,))


def daemon_command(bundle: Path, labels: Path, recording: Path, precision: str, log_dir: Path,
                   threads: int | None, low_memory: bool = False, threshold: float = 0.0) -> list[str]:
    """The `biolingual-edge run --input --fast` command line the daemon benchmarks run."""
    command = [sys.executable, "-m", "edge", "run", "--input", str(recording), "--fast", "--labels", str(labels),
               "--bundle", str(bundle), "--log-dir", str(log_dir), "--threshold", f"{threshold:g}",
               "--heartbeat", "1", "--precision", precision, "--force-precision", "--set", "unit.unit_id=bench"]
    if threads:
        command += ["--set", f"model.threads={threads}"]
    if low_memory:
        command += ["--set", "model.low_memory=true"]
    return command


def daemon_run(bundle: Path, labels: Path, recording: Path, precision: str, log_dir: Path,
               threads: int | None, low_memory: bool = False) -> dict[str, float]:
    """One `biolingual-edge run --fast` subprocess; wall time, CPU %, and what its health records say."""
    from desk.collect.cards import read_card

    command = daemon_command(bundle, labels, recording, precision, log_dir, threads, low_memory)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"daemon exited with status {status}")
    health = [record for record, _ in read_card(log_dir).health]
    audio_s = health[-1]["analysed_until_s"]
    return {"wall_s": wall, "audio_s": audio_s, "rtf": audio_s / wall,
            "cpu_percent": 100 * (usage.ru_utime + usage.ru_stime) / wall,
            "max_lag_s": max(h["lag_s"] for h in health), "peak_rss_mb": max(h["peak_rss_mb"] for h in health),
            "windows": health[-1]["windows_analysed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pq/bench"))
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()

    from compare_baseline import in_child, reference_run
    from precision_cpu import prepare

    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle = prepare(args.workdir, args.audio, "full")
    checkpoint = args.workdir / "checkpoint"
    labels = args.workdir / "daemon-labels.txt"
    ensure_labels(bundle, checkpoint, labels)
    recording = long_recording(args.audio, args.minutes, args.workdir / "ten-minutes.wav")
    from edge.ops.bench import machine_info

    info = machine_info()
    print(f"recording {recording}: {args.minutes:g} min; bundle {bundle}; CPU {info['cpu']}, {info['cores']} cores, "
          f"INT8 features: {info['int8_flags']}; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}",
          flush=True)

    reference = in_child(reference_run, str(checkpoint), [recording], 10 * RATE, 5 * RATE, 4, args.threads)
    reference_rtf = reference.audio_s / reference.total_s
    rows = [{"pipeline": "reference: ClapFeatureExtractor + torch fp32 (in-process loop)", "rtf": reference_rtf,
             "ratio": 1.0, "peak_rss_mb": reference.peak_rss_mib}]
    from edge.model.bundle import open_bundle

    present = [p for p in ("fp32", "fp16", "int8") if p in open_bundle(bundle).manifest.models]
    variants = [(p, False) for p in present] + [(p, True) for p in present if p == "int8"]
    for precision, low_memory in variants:
        log_dir = args.workdir / f"daemon-{precision}-{'lowmem-' if low_memory else ''}{int(time.time())}"
        result = daemon_run(bundle, labels, recording, precision, log_dir, args.threads, low_memory)
        name = f"biolingual-edge run --fast ({precision}{', low_memory' if low_memory else ''})"
        rows.append({"pipeline": name, **result, "ratio": result["rtf"] / reference_rtf})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| pipeline | real-time × | × reference | max lag s | CPU % | peak RSS MB |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['pipeline']} | {row['rtf']:.1f} | {row['ratio']:.2f} | {row.get('max_lag_s', float('nan')):.2f} "
              f"| {row.get('cpu_percent', float('nan')):.0f} | {row['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
