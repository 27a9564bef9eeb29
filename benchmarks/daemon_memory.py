"""Where the INT8 daemon's peak RSS goes, per configuration and hardware profile, in one run.

Configurations ``default`` and ``low_memory`` (no profile) also run stage by stage in a fresh interpreter
(VmHWM is per process): imports, the INT8 session, one window's log-mel, the first inference, a batch of 4.
Every configuration then runs the real ``biolingual-edge run --input --fast`` daemon on the 10-minute
recording under ``/usr/bin/time -v`` (its "Maximum resident set size" is the figure; the daemon's own
heartbeat peak is shown next to it): the profiles run with ``--profile NAME`` and nothing else changed
but the bundle, labels, threshold and log folder, so their clips (FLAC around each detection) and
embeddings (fp16) are on as shipped. ``jetson-orin-nano`` ships ``backend: trt``, which needs the Jetson's
GPU: here it runs with ``model.backend=ort`` on the CPU (INT8), the only part of it this machine can measure.
Also per configuration: real-time factor, time to the first analysed window after the daemon loop
starts (the first heartbeat that counts a window: 1 s resolution; the model is loaded by then) and after the
process starts (its ``READY=1`` on a ``NOTIFY_SOCKET`` of ours, as benchmarks/boot_time.py measures it: imports,
bundle checks, model load and the first window; not for the capture pass) and the detections, identical across
configurations of the same hop. ``--capture-minutes N`` adds a real-time pass: the Raspberry Pi 4 profile capturing the
PulseAudio null sink ``fieldmic`` (its monitor, through PortAudio's ``pulse`` device) while ``paplay``
plays N minutes (the recording, repeated) into it
(an hour: ``--capture-minutes 60``), with its gaps and xruns counted; skipped, saying so, when the sink is not there;
with ``--baseline-repo`` the baseline checkout captures the same playback after it, and ``--capture-alsa-config
FILE`` adds both again with ``ALSA_CONFIG_PATH=FILE`` (the capture cost without the machine's ALSA plugins).

    python benchmarks/daemon_memory.py [--workdir /tmp/scale-bench] [--threshold -0.4] [--json out.json]
        [--configs default low_memory raspberry-pi-4 raspberry-pi-5 jetson-orin-nano] [--capture-minutes 60]
        [--baseline-repo /path/to/checkout-before] [--capture-alsa-config /path/to/alsa.conf]

Every daemon run also has its ``/proc/PID/smaps`` sampled (benchmarks/rss_breakdown.py): the table of where
the peak is (ONNX Runtime, numpy/OpenBLAS, interpreter, audio libraries, PulseAudio pools, heap, stacks,
anonymous mappings), so a change can be judged by the part it moves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from rss_breakdown import Breakdown, PeakSampler, markdown, python_child  # noqa: E402

from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

RATE = 48_000
MINUTE_S = 60
SINK = "fieldmic"
CONFIGS: dict[str, list[str]] = {
    "default": [],
    "low_memory": ["--set", "model.low_memory=true"],
    "raspberry-pi-4": ["--profile", "raspberry-pi-4"],
    "raspberry-pi-5": ["--profile", "raspberry-pi-5"],
    "jetson-orin-nano": ["--profile", "jetson-orin-nano", "--set", "model.backend=ort",
                         "--set", "model.providers=[CPUExecutionProvider]"],
}
"""Daemon flags per configuration (the profiles as shipped, but for what no unit here can run)."""
PROFILE_PROMPTS = ("wind noise", "rain", "human speech")


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


def time_v_run(command: list[str], repo: Path = REPO) -> tuple[float, float, float, Breakdown | None, float]:
    """Run ``command`` under ``/usr/bin/time -v`` with ``repo``'s code and its smaps sampled: (wall seconds,
    maximum resident set size in MB, CPU seconds (user + system), the breakdown at the highest RSS sampled, seconds
    from the process start to its first analysed window: READY=1, as benchmarks/boot_time.py measures it; NaN if it
    never came)."""
    import os
    import time

    from boot_time import ReadyWatch

    with ReadyWatch() as ready:
        ready.start()
        started = time.perf_counter()
        timed = subprocess.Popen(["/usr/bin/time", "-v", *command], cwd=repo, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(repo), **ready.env()})
        sampler = PeakSampler(python_child(timed.pid))
        sampler.start()
        _, stderr = timed.communicate()
        wall = time.perf_counter() - started
        sampler.join()
        first_window = float("nan") if ready.ready_s is None else ready.ready_s
    if timed.returncode != 0:
        raise SystemExit(f"daemon failed ({timed.returncode}):\n{stderr[-2000:]}")
    fields = {key.strip(): value.strip() for key, value in (li.rsplit(":", 1) for li in stderr.splitlines()
                                                             if li.startswith("\t") and ":" in li)}
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    return wall, int(fields["Maximum resident set size (kbytes)"]) / 1024, cpu, sampler.peak, first_window


def daemon_10min(bundle: Path, labels: Path, recording: Path, log_dir: Path, extra: list[str],
                 threshold: float, repo: Path = REPO) -> dict[str, Any]:
    """One `run --input --fast` of the whole recording under /usr/bin/time -v, and what its card says."""
    import shutil

    from daemon_fast import daemon_command

    shutil.rmtree(log_dir, ignore_errors=True)
    threads = None if "--profile" in extra else 1
    command = [*daemon_command(bundle, labels, recording, "int8", log_dir, threads, False, threshold), *extra]
    wall, max_rss, cpu, peak, first_window = time_v_run(command, repo)
    return {"wall_s": wall, "max_rss_mb": max_rss, "cpu_s": cpu, "breakdown": peak,
            "first_window_process_s": first_window, **card_figures(log_dir, wall)}


def card_figures(log_dir: Path, wall: float) -> dict[str, Any]:
    """Heartbeat peak RSS, real-time factor, first analysed window and the detections of a daemon's card."""
    from desk.collect.cards import read_card

    card = read_card(log_dir)
    health = [record for record, _ in card.health]
    first = min((h["uptime_s"] for h in health if h["windows_analysed"] >= 1), default=float("nan"))
    columns = card.detections.columns
    kept = [i for i, c in enumerate(columns) if c in ("label", "score", "start_sample", "end_sample",
                                                       "peak_start_sample", "windows")]
    return {"heartbeat_peak_rss_mb": max(h["peak_rss_mb"] for h in health),
            "rtf": health[-1]["analysed_until_s"] / wall, "windows": health[-1]["windows_analysed"],
            "first_window_uptime_s": first, "detections": [[row[i] for i in kept] for row in card.detections.rows]}


def ensure_prompts(bundle: Path, checkpoint: Path, workdir: Path) -> None:
    """The profiles' background and privacy prompts embedded in the bundle (through torch, once)."""
    from edge.model.bundle import open_bundle
    from edge.scoring.label_sets import embedded_names

    missing = [p for p in PROFILE_PROMPTS if p not in embedded_names(open_bundle(bundle))]
    if missing:
        prompts = workdir / "profile-prompts.txt"
        prompts.write_text("\n".join(missing) + "\n", encoding="utf-8")
        subprocess.run([sys.executable, "-m", "export", "labels", "--model", str(checkpoint), "--labels",
                        str(prompts), "--bundle", str(bundle)], cwd=REPO, check=True, capture_output=True)


def sink_running() -> bool:
    import shutil

    return shutil.which("paplay") is not None and SINK in subprocess.run(
        ["pactl", "list", "short", "sinks"], capture_output=True, text=True, check=False).stdout


def capture_pass(bundle: Path, labels: Path, recording: Path, workdir: Path, minutes: float,
                 threshold: float, repo: Path = REPO, env: dict[str, str] | None = None,
                 launcher: tuple[str, ...] = ("-m", "edge")) -> dict[str, Any]:
    """The Raspberry Pi 4 profile capturing ``fieldmic`` while ``minutes`` of the recording play into it, with
    ``repo``'s code and ``env`` added to the daemon's environment."""
    import os
    import shutil
    import signal
    import time

    import soundfile as sf

    from desk.collect.cards import read_card

    clip = workdir / f"capture-{minutes:g}min.wav"
    if not clip.exists():  # the recording repeated to `minutes`, written a block at a time
        left = round(minutes * MINUTE_S * RATE)
        with sf.SoundFile(clip, "w", RATE, 1, subtype="PCM_16") as out:
            while left > 0:
                for block in sf.blocks(recording, blocksize=MINUTE_S * RATE, dtype="int16", frames=left):
                    out.write(block)
                    left -= len(block)
    log_dir = workdir / "memory-capture"
    shutil.rmtree(log_dir, ignore_errors=True)
    command = [sys.executable, *launcher, "run", "--labels", str(labels), "--bundle", str(bundle), "--log-dir",
               str(log_dir), "--device", "pulse", "--threshold", f"{threshold:g}", "--heartbeat", "1",
               "--precision", "int8", "--force-precision", "--set", "unit.unit_id=bench",
               *CONFIGS["raspberry-pi-4"], "--set", "schedule.duty.on_min=1439", "--set", "schedule.duty.off_min=1"]
    env = {**os.environ, "PYTHONPATH": str(repo), "PULSE_SOURCE": f"{SINK}.monitor", **(env or {})}
    started = time.perf_counter()
    stderr = (workdir / "capture-daemon.stderr").open("w")
    daemon = subprocess.Popen(command, cwd=repo, env=env, stderr=stderr)
    sampler = PeakSampler(daemon.pid)
    sampler.start()
    opened = False
    while not opened and daemon.poll() is None and time.perf_counter() - started < 120:
        time.sleep(0.5)
        opened = any(r["kind"] == "stream_open" for r, _ in read_card(log_dir).events)
    if opened:
        subprocess.run(["paplay", f"--device={SINK}", str(clip)], check=True)  # takes `minutes`, real time
        time.sleep(15)  # the windows ending with the recording, then until the backlog is gone (at most 60 s)
        deadline = time.perf_counter() + 45
        while time.perf_counter() < deadline and [h for h, _ in read_card(log_dir).health][-1]["lag_s"] > 2:
            time.sleep(1)
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(daemon.pid, 0) if daemon.returncode is None else (0, daemon.returncode, None)
    stderr.close()
    if not opened or usage is None:
        raise SystemExit(f"capture pass: the daemon did not open the fieldmic stream (see {stderr.name})")
    wall = time.perf_counter() - started
    events = [r["kind"] for r, _ in read_card(log_dir).events]
    sampler.join()
    return {"wall_s": wall, "max_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "exit_status": status, "breakdown": sampler.peak,
            "gaps": events.count("gap"), "xruns": events.count("xrun"), **card_figures(log_dir, wall)}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    print("\n| daemon (INT8 full size, 10-min recording unless said) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rows = (("max_rss_mb", "**peak RSS MB** (`/usr/bin/time -v`; capture: wait4)", ".1f"),
            ("heartbeat_peak_rss_mb", "daemon's own heartbeat peak RSS MB", ".1f"),
            ("rtf", "audio s analysed per wall s", ".1f"),
            ("cpu_s", "CPU s (user + system) of the whole run", ".1f"),
            ("first_window_uptime_s", "first analysed window, s after the daemon loop starts (heartbeat)", ".1f"),
            ("first_window_process_s", "first analysed window, s after the process starts (READY=1)", ".1f"))
    for key, label, fmt in rows:
        print(f"| {label} | " + " | ".join(f"{results[n].get(key, float('nan')):{fmt}}" for n in names) + " |")
    print("| detections | " + " | ".join(str(len(results[n]["detections"])) for n in names) + " |")
    print("| gaps / xruns on the card (capture) | " + " | ".join(
        f"{results[n]['gaps']} / {results[n]['xruns']}" if "gaps" in results[n] else "—" for n in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--threshold", type=float, default=-0.4,
                        help="detection threshold (random weights score near -0.4; pick one that gives detections)")
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--capture-minutes", type=float, default=0.0,
                        help="also capture fieldmic in real time while this many minutes play into it (0: skip)")
    parser.add_argument("--capture-alsa-config", type=Path,
                        help="also capture with ALSA_CONFIG_PATH set to this file (e.g. one without the machine's "
                             "plugin configs: what the rig's ALSA plugins cost)")
    parser.add_argument("--baseline-repo", type=Path,
                        help="also run every configuration with this checkout's code (e.g. /work/main before a "
                             "change), in the same run: before/after peak RSS and whether the detections are identical")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        stages_child(args.child[0], args.child[1], args.child[2] == "1")
        return
    args.audio = args.audio or shared_audio()

    import os

    import soundfile as sf
    from analyze_scale import bench_inputs

    from edge.ops.bench import machine_info

    bundle, labels, recording = bench_inputs(args.workdir, args.audio, 10)
    ensure_prompts(bundle, args.workdir / "checkpoint", args.workdir)
    minute = args.workdir / "one-minute.wav"
    samples, rate = sf.read(recording, frames=MINUTE_S * RATE, dtype="float32")
    sf.write(minute, samples, rate, subtype="PCM_16")
    results: dict[str, Any] = {}
    stages: dict[str, dict[str, float]] = {}
    for name in args.configs:
        if name in ("default", "low_memory"):
            out = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(minute),
                                  str(int(name == "low_memory"))], check=True, capture_output=True, text=True,
                                 cwd=REPO).stdout
            stages[name] = json.loads(out.strip().splitlines()[-1])
        runs = [(name, REPO)] + ([(f"{name} (baseline)", args.baseline_repo.resolve())] if args.baseline_repo else [])
        for column, repo in runs:
            results[column] = daemon_10min(bundle, labels, recording, args.workdir / f"memory-{name}", CONFIGS[name],
                                           args.threshold, repo)
            print(json.dumps({column: {k: v for k, v in results[column].items()
                                       if k not in ("detections", "breakdown")}}), file=sys.stderr)
    capture = "not asked (--capture-minutes 0)"
    if args.capture_minutes:
        capture = f"not run: no PulseAudio null sink '{SINK}' (start it as .ci/run does)"
        if sink_running():
            name = f"capture {args.capture_minutes:g} min, raspberry-pi-4"
            passes: list[tuple[str, Path, dict[str, str]]] = [(name, REPO, {})]
            if args.baseline_repo:
                passes.append((f"{name} (baseline)", args.baseline_repo.resolve(), {}))
            if args.capture_alsa_config:
                alsa = {"ALSA_CONFIG_PATH": str(args.capture_alsa_config.resolve())}
                passes += [(f"{column}, ALSA config {args.capture_alsa_config.name}", repo, alsa)
                           for column, repo, _ in passes]
            for column, repo, env in passes:
                results[column] = capture_pass(bundle, labels, recording, args.workdir, args.capture_minutes,
                                               args.threshold, repo, env)
                print(json.dumps({column: {k: v for k, v in results[column].items()
                                           if k not in ("detections", "breakdown")}}), file=sys.stderr)
            capture = "run"
    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; INT8 features: {info['int8_flags']}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if stages:
        print("\n| stage (cumulative peak RSS, MB) | " + " | ".join(stages) + " |\n|---|" + "---|" * len(stages))
        for stage in next(iter(stages.values())):
            print(f"| {stage} | " + " | ".join(f"{marks[stage]:.0f}" for marks in stages.values()) + " |")
    print_table(results)
    peaks = {name: r["breakdown"] for name, r in results.items() if r.get("breakdown") is not None}
    if peaks:
        print("\nWhere the peak is (/proc/PID/smaps sampled every 50 ms; the snapshot at the highest RSS seen):\n")
        print(markdown(peaks))
    print(f"\nreal-time capture pass: {capture}")
    same_hop = [n for n in ("default", "low_memory", "raspberry-pi-5", "jetson-orin-nano") if n in results]
    if len(same_hop) > 1:
        same = all(results[n]["detections"] == results[same_hop[0]]["detections"] for n in same_hop)
        print(f"detections identical across {', '.join(same_hop)} (5 s hop): {same}")
    for name in args.configs if args.baseline_repo else ():
        same = results[name]["detections"] == results[f"{name} (baseline)"]["detections"]
        print(f"{name}: detections identical to the baseline's ({args.baseline_repo}): {same}")
    captures = [n for n in results if n.startswith("capture ")]
    if len(captures) > 1:  # live audio: each run's window grid starts at its own stream open, so scores differ
        labels_of = {n: sorted({row[0] for row in results[n]["detections"]}) for n in captures}
        same = all(labels_of[n] == labels_of[captures[0]] for n in captures)
        print(f"capture runs detect the same labels: {same} ({labels_of[captures[0]]})")
    if args.json:
        plain = {name: {k: (asdict(v) if k == "breakdown" and v is not None else v) for k, v in r.items()}
                 for name, r in results.items()}
        args.json.write_text(json.dumps({"stages_mb": stages, **plain}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
