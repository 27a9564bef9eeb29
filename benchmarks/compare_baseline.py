"""Reference (transformers ClapFeatureExtractor + torch get_audio_features, fp32) vs ours end to end.

One run, the same real recordings, the full-size default ClapConfig (random weights, cached):

* reference: decode + resample (soundfile/soxr, as ours) -> exact 480 000-sample windows on the same
  window/hop grid -> ``ClapFeatureExtractor`` (the checkpoint's own config) -> ``get_audio_features`` under
  ``torch.inference_mode()`` (the fastest eager torch call), same threads as ours; ``--torch-flush-denormal``
  adds the same with subnormals flushed (ONNX Runtime flushes them too), and the ratios are quoted against the
  faster reference in CPU time;
* ours: decode -> resample -> windower -> streaming log-mel -> ONNX Runtime -> scoring, for every
  precision in the bundle (and fp32 on the exported, un-optimised graph, to show the graph step);
* ``biolingual-edge analyze`` itself (``--analyze-cli``, default on when the bundle has a label set): the real
  command as a subprocess over the same recordings, whole process (start-up, imports, bundle checksums,
  session, tables) in CPU time, next to the reference's whole process (imports and model load included).

Stage times are CPU seconds of the pipeline's process (all threads), so the model / non-model shares hold on
a loaded machine; wall times are printed too.

Each pipeline runs in its own spawned process per round (its own peak RSS, no shared caches); rounds
alternate the pipelines so a busy machine hurts them alike, and the best round of each is reported.
Every speed figure stands next to its fidelity against the reference embeddings of the same windows:
max abs difference, centred cosine (the reference mean embedding subtracted from both first, since
random-weight embeddings all point the same way) and top-1 agreement on a label set made of one
prototype per recording (the mean reference embedding of its windows).

    python benchmarks/compare_baseline.py [--audio ../shared/audio] [--cache /tmp/bench-cache] [--json out.json]
    python benchmarks/compare_baseline.py --cache /tmp/speed/cmp --rounds 2 --threads 1 --batch 1 \
        --precision int8 --precision fp32 --torch-flush-denormal     # the Xeon table of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402
from edge.audio.files import find_audio_files, read_file, stream_file  # noqa: E402
from edge.audio.windowing import Window, Windower, clip_windows  # noqa: E402
from edge.errors import AudioError  # noqa: E402
from edge.stream.pipeline import batched_windows  # noqa: E402

DEFAULT_CACHE = Path("/tmp/bench-cache")
RATE = 48_000
KIB = 1024


@dataclass
class Run:
    """One pipeline's pass over all recordings (times in seconds)."""

    name: str
    total_s: float
    windows: int
    audio_s: float
    first_window_s: float
    """From process start of the pipeline (model load included) to the first window's result."""
    peak_rss_mib: float
    stages: dict[str, float] = field(default_factory=dict)
    """CPU seconds per stage (the process's, all threads); "inference" is the model."""
    cpu_s: float = 0.0
    """CPU seconds of the whole process (all threads) over the same loop: steadier than wall time on a
    machine shared with other tenants."""
    embeddings: Any = None
    top1: Any = None
    process_cpu_s: float = 0.0
    """CPU seconds of the whole process from its start to the end of the loop (imports, model load included)."""


def recordings(audio_dir: Path) -> list[Path]:
    """Every file under ``audio_dir`` that decodes (same list for both pipelines)."""
    usable = []
    for path in find_audio_files([audio_dir]):
        try:
            next(iter(stream_file(path, RATE)))
            usable.append(path)
        except (AudioError, StopIteration):
            continue
    return usable


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB


def reference_run(checkpoint: str, files: list[Path], window: int, hop: int, batch: int,
                  threads: int | None, flush_denormal: bool = False) -> Run:
    """ClapFeatureExtractor + torch get_audio_features (fp32, eager, ``inference_mode``), decode and resample
    included; ``flush_denormal``: with ``torch.set_flush_denormal(True)`` (not torch's default)."""
    started = time.perf_counter()
    import torch
    from transformers import ClapFeatureExtractor, ClapModel

    from export.checkpoint import projected

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)

    extractor = ClapFeatureExtractor.from_pretrained(checkpoint)
    model = ClapModel.from_pretrained(checkpoint).eval()
    stages = {"decode": 0.0, "frontend": 0.0, "inference": 0.0}
    embeddings, first, audio_s = [], 0.0, 0.0

    def embed(windows: list[np.ndarray]) -> np.ndarray:
        t0 = time.process_time()
        features = extractor(windows, sampling_rate=RATE, return_tensors="np")["input_features"]
        t1 = time.process_time()
        with torch.inference_mode():
            out = projected(model.get_audio_features(input_features=torch.from_numpy(features))).numpy()
        stages["frontend"] += t1 - t0
        stages["inference"] += time.process_time() - t1
        return out

    warm = read_file(files[0], RATE)[:window]
    embed([warm])
    stages = dict.fromkeys(stages, 0.0)
    first = time.perf_counter() - started
    begin, cpu = time.perf_counter(), time.process_time()
    for path in files:
        t0 = time.process_time()
        samples = read_file(path, RATE)
        windows = [w.samples for w in clip_windows(samples, window, hop)]
        stages["decode"] += time.process_time() - t0
        audio_s += samples.shape[0] / RATE
        for start in range(0, len(windows), batch):
            embeddings.append(embed(windows[start : start + batch]))
    total, process_cpu = time.perf_counter() - begin, time.process_time()
    name = "reference: ClapFeatureExtractor + torch fp32" + (" (flush denormals)" if flush_denormal else "")
    return Run(name, total, sum(e.shape[0] for e in embeddings), audio_s,
               first, peak_rss(), stages, process_cpu - cpu, np.concatenate(embeddings), process_cpu_s=process_cpu)


def ours_run(bundle_dir: str, precision: str, optimized: bool, files: list[Path], window: int, hop: int,
             batch: int, labels: np.ndarray, threads: int | None) -> Run:
    """Our runtime end to end: stream_file -> Windower -> StreamingLogMel -> ORT -> Scorer."""
    started = time.perf_counter()
    from edge.model.backends import create_backend
    from edge.model.bundle import open_bundle
    from edge.model.frontend_stream import StreamingLogMel
    from edge.scoring.scorer import LabelSet, Scorer

    bundle = open_bundle(bundle_dir)
    backend = create_backend(bundle, precision=precision, threads=threads, optimized=optimized)
    frontend = StreamingLogMel(bundle.manifest.frontend)
    scorer = Scorer(LabelSet(tuple(map(str, range(labels.shape[0]))), labels), bundle.manifest.logit_scale)
    stages = {"frontend": 0.0, "inference": 0.0, "scoring": 0.0}
    embeddings, top1, audio_s = [], [], 0.0

    def process(windows: list[Window]) -> None:
        t0 = time.process_time()
        features = frontend.batch(windows)
        t1 = time.process_time()
        out = backend.embed(features)
        t2 = time.process_time()
        scores = scorer.score(out)
        stages["frontend"] += t1 - t0
        stages["inference"] += t2 - t1
        stages["scoring"] += time.process_time() - t2
        embeddings.append(out)
        top1.append(scores.score.argmax(axis=1))

    process(clip_windows(read_file(files[0], RATE), window, hop)[:1])
    first = time.perf_counter() - started
    embeddings.clear()
    top1.clear()
    stages = dict.fromkeys(stages, 0.0)
    begin, cpu = time.perf_counter(), time.process_time()
    for path in files:
        frontend.reset()
        end = 0
        for windows in batched_windows(stream_file(path, RATE), Windower(window, hop), batch):
            end = windows[-1].end_sample
            process(windows)
        audio_s += end / RATE
    total, process_cpu = time.perf_counter() - begin, time.process_time()
    cpu = process_cpu - cpu
    stages["decode"] = cpu - sum(stages.values())  # decode, resample, windowing and the loop itself
    kind = getattr(backend, "model_file", precision)
    return Run(f"ours {precision} ({kind})", total, sum(e.shape[0] for e in embeddings), audio_s, first,
               peak_rss(), stages, cpu, np.concatenate(embeddings), np.concatenate(top1), process_cpu)


def analyze_cli_run(bundle_dir: Path, labels_path: Path, precision: str, files: list[Path], threads: int | None,
                    batch: int) -> Run:
    """``biolingual-edge analyze`` as a subprocess (one worker): whole-process CPU and peak RSS from its rusage
    (run this in a fresh child, :func:`in_child`, so the rusage of children is the command's alone)."""
    with tempfile.TemporaryDirectory(prefix="compare-analyze-") as out:
        command = [sys.executable, "-m", "edge", "analyze", *map(str, files), "--labels", str(labels_path),
                   "--bundle", str(bundle_dir), "--out", out, "--precision", precision, "--force-precision",
                   "--workers", "1", "--batch", str(batch)] + (["--threads", str(threads)] if threads else [])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        record = json.loads((Path(out) / "run.json").read_text(encoding="utf-8"))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    windows = int(record["detections"])  # top-1, no threshold: one row per window
    return Run(f"biolingual-edge analyze --precision {precision} (whole process)", wall, windows, 0.0, float("nan"),
               after.ru_maxrss / KIB, {}, cpu, process_cpu_s=cpu)


def bundle_labels(bundle_dir: Path, out: Path) -> Path | None:
    """A labels file for one of the bundle's text label sets (what ``analyze`` needs), or None."""
    from edge.model.bundle import open_bundle

    for entry in open_bundle(bundle_dir, verify=False).manifest.label_sets.values():
        if entry.source == "text" and not any(entry.scientific_names):
            out.write_text("\n".join(entry.names) + "\n", encoding="utf-8")
            return out
    return None


def in_child(function: Any, *args: Any) -> Run:
    """Run ``function(*args)`` in a fresh spawned interpreter (own RSS, no warm caches from the others)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def ensure_bundle(cache: Path, audio: Path, precisions: list[str] | None = None) -> tuple[Path, Path]:
    """The full-size random checkpoint and its bundle, built once into ``cache`` with today's exporter: fp32
    (+ ONNX Runtime-optimised), a text label set (for the ``analyze`` rows) and, when asked for, INT8
    calibrated on ``CALIBRATION_WINDOWS`` windows of ``audio``. A fresh ``--cache`` folder re-exports all."""
    checkpoint, bundle = cache / "checkpoint-full", cache / "bundle-full"
    if not (checkpoint / "config.json").is_file():
        from export.synthetic import build_checkpoint

        print(f"building the full-size random checkpoint in {checkpoint} …", flush=True)
        build_checkpoint(checkpoint, "full", seed=0)
    if not (bundle / "manifest.json").is_file():
        from export.checkpoint import load_checkpoint
        from export.onnx_bundle import export_fp32_bundle

        print(f"exporting the fp32 bundle to {bundle} …", flush=True)
        export_fp32_bundle(load_checkpoint(str(checkpoint)), bundle, audio)
    from edge.model.bundle import open_bundle

    manifest = open_bundle(bundle, verify=False).manifest
    if not any(entry.source == "text" for entry in manifest.label_sets.values()):
        names = cache / "label-names.txt"
        names.write_text("\n".join(LABEL_NAMES) + "\n", encoding="utf-8")
        print(f"adding {len(LABEL_NAMES)} text labels to {bundle} …", flush=True)
        subprocess.run([sys.executable, "-m", "export", "labels", "--bundle", str(bundle), "--labels", str(names),
                        "--model", str(checkpoint)], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if "int8" in (precisions or []) and "int8" not in manifest.models:
        from calibration.dataset import build_calibration_set
        from export.quantize import QuantizeOptions, add_precision

        print(f"calibrating ({CALIBRATION_WINDOWS} windows) and quantizing INT8 into {bundle} …", flush=True)
        data = build_calibration_set([audio], manifest.frontend, CALIBRATION_WINDOWS, seed=0)
        add_precision(bundle, data, QuantizeOptions(precision="int8", target="ort"))
    return checkpoint, bundle


CALIBRATION_WINDOWS = 64
LABEL_NAMES = ("Great Plains Toad", "Eurasian Magpie", "Ruffed Grouse", "Golden-winged Warbler", "Storm Petrel")
"""The text label set ``analyze`` scores against in the benchmark (what it ranks does not change its speed)."""


def fidelity(reference: Run, ours: Run, reference_top1: np.ndarray) -> dict[str, float]:
    """Max abs, centred cosine (min, mean) and top-1 agreement of ``ours`` against ``reference``."""
    ref, cand = reference.embeddings.astype(np.float64), ours.embeddings.astype(np.float64)
    centre = ref.mean(axis=0)
    a, b = ref - centre, cand - centre
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"max_abs": float(np.abs(ref - cand).max()), "centred_cosine_min": float(cosine.min()),
            "centred_cosine_mean": float(cosine.mean()),
            "top1_agreement": float("nan") if ours.top1 is None else float((ours.top1 == reference_top1).mean())}


def prototypes(reference: Run, files: list[Path], window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """One label per recording (its mean reference embedding, normalised) and the reference's top-1."""
    counts = [len(clip_windows(read_file(p, RATE), window, hop)) for p in files]
    bounds = np.cumsum([0, *counts])
    rows = np.stack([reference.embeddings[s:e].mean(axis=0) for s, e in zip(bounds[:-1], bounds[1:])])
    labels = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return labels, (reference.embeddings @ labels.T).argmax(axis=1)


NON_MODEL_STAGES = ("decode", "frontend", "scoring")


def summary_row(run: Run, reference: Run, fastest: Run, quality: dict[str, float] | None) -> dict[str, Any]:
    """One table row: speed in wall and CPU time, the model / non-model split, the ratios to the references."""
    n = run.windows
    model = run.stages.get("inference", float("nan"))
    loop = 1.0 if run.stages else float("nan")  # a whole-process run has no steady-state loop to compare
    row = {"pipeline": run.name, "windows": n, "windows_per_s": n / run.total_s,
           "real_time_factor": run.audio_s / run.total_s, "ms_per_window": 1e3 * run.total_s / n,
           "speedup_vs_reference": reference.total_s / run.total_s,
           "cpu_ms_per_window": 1e3 * run.cpu_s / n, "cpu_speedup_vs_reference": loop * reference.cpu_s / run.cpu_s,
           "cpu_speedup_vs_fastest_reference": loop * fastest.cpu_s / run.cpu_s,
           "model_cpu_ms_per_window": 1e3 * model / n,
           "non_model_cpu_ms_per_window": {k: 1e3 * run.stages[k] / n for k in NON_MODEL_STAGES if k in run.stages},
           "non_model_share": 1 - model / run.cpu_s,
           "process_cpu_s": run.process_cpu_s,
           "process_speedup_vs_reference": reference.process_cpu_s / run.process_cpu_s,
           "first_window_s": run.first_window_s, "peak_rss_mib": run.peak_rss_mib, "stages_cpu_s": run.stages}
    if quality:
        row.update(quality)
    return row


def markdown(rows: list[dict[str, Any]], info: dict[str, Any], fastest: str) -> str:
    """The results as a markdown table (speed next to fidelity) and the ratios in words."""
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, INT8 features: {info['int8_flags']}; ONNX Runtime "
             f"{info['onnxruntime']}, torch {info.get('torch', '?')}; load average {info['load_average']}; threads "
             f"{info['threads'] or 'library default'}; window {info['window_s']:g} s, hop {info['hop_s']:g} s, batch "
             f"{info['batch']}, {info['recordings']} recordings, {info['audio_s']:.0f} s of audio, "
             f"{rows[0]['windows']} windows, best of {info['rounds']} rounds (least CPU).", "",
             "| pipeline | windows/s | ms/window | CPU ms/window | × reference (CPU) | × fastest reference (CPU) "
             "| model CPU ms/window | non-model CPU ms/window: decode / log-mel / scoring | non-model share (CPU) "
             "| whole process CPU s (× reference) | first window s | peak RSS MiB | max abs | centred cos min / mean "
             "| top-1 agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        quality = ("—", "—", "—") if "max_abs" not in r else (
            f"{r['max_abs']:.1e}", f"{r['centred_cosine_min']:.6f} / {r['centred_cosine_mean']:.6f}",
            "—" if np.isnan(r["top1_agreement"]) else f"{100 * r['top1_agreement']:.1f} %")
        parts = r["non_model_cpu_ms_per_window"]
        split = " / ".join(f"{parts[k]:.1f}" if k in parts else "—" for k in NON_MODEL_STAGES) if parts else "—"
        model = "—" if np.isnan(r["model_cpu_ms_per_window"]) else f"{r['model_cpu_ms_per_window']:.1f}"
        share = "—" if np.isnan(r["non_model_share"]) else f"{100 * r['non_model_share']:.0f} %"
        first = "—" if np.isnan(r["first_window_s"]) else f"{r['first_window_s']:.2f}"
        ratios = [f"{r[k]:.2f}" if not np.isnan(r[k]) else "—"
                  for k in ("cpu_speedup_vs_reference", "cpu_speedup_vs_fastest_reference")]
        lines.append(
            f"| {r['pipeline']} | {r['windows_per_s']:.2f} | {r['ms_per_window']:.1f} | {r['cpu_ms_per_window']:.1f} "
            f"| {ratios[0]} | **{ratios[1]}** | {model} "
            f"| {split} | {share} | {r['process_cpu_s']:.1f} ({r['process_speedup_vs_reference']:.2f}×) | {first} "
            f"| {r['peak_rss_mib']:.0f} | {quality[0]} | {quality[1]} | {quality[2]} |")
    lines += ["", f"Fastest fair reference (least CPU): {fastest}. Ratios in CPU time:"]
    for r in rows:
        if "whole process" in r["pipeline"]:
            lines.append(f"- {r['pipeline']}: **{r['process_speedup_vs_reference']:.2f}×** the reference's whole "
                         f"process ({r['process_cpu_s']:.1f} s against {rows[0]['process_cpu_s']:.1f} s CPU; start-up, "
                         "imports and model load included on both sides)")
        elif not r["pipeline"].startswith("reference"):
            non_model = 1e3 * sum(r["stages_cpu_s"][k] for k in NON_MODEL_STAGES) / r["windows"]
            lines.append(f"- {r['pipeline']}: **{r['cpu_speedup_vs_fastest_reference']:.2f}×** the fastest reference "
                         f"in the steady-state loop ({r['cpu_speedup_vs_reference']:.2f}× the plain one); model "
                         f"{100 - 100 * r['non_model_share']:.0f} % of its CPU, non-model {non_model:.1f} ms/window")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the full checkpoint/bundle live")
    parser.add_argument("--window", type=float, default=10.0, help="window length in seconds")
    parser.add_argument("--hop", type=float, default=5.0, help="hop in seconds")
    parser.add_argument("--batch", type=int, default=4, help="windows per model call (both pipelines)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and ORT intra-op threads (default: each library's own)")
    parser.add_argument("--precision", action="append", help="precisions to run (default: all in the bundle)")
    parser.add_argument("--torch-flush-denormal", action="store_true",
                        help="also run the reference with torch.set_flush_denormal(True) (ratios vs the plain one)")
    parser.add_argument("--analyze-cli", action=argparse.BooleanOptionalAction, default=True,
                        help="also time `biolingual-edge analyze` as a subprocess, per precision (needs a label set "
                             "in the bundle)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the results table as markdown here")
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()

    from edge.model.bundle import open_bundle
    from edge.ops.bench import machine_info

    if not args.audio.is_dir():
        raise SystemExit(f"error: no recordings folder {args.audio}\nhint: pass --audio DIR or set "
                         "BIOLINGUAL_SHARED_AUDIO (e.g. /work/shared/audio)")
    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint, bundle = ensure_bundle(args.cache, args.audio, args.precision)
    manifest = open_bundle(bundle).manifest
    files = recordings(args.audio)
    window, hop = round(args.window * RATE), round(args.hop * RATE)
    variants = [(p, True) for p in (args.precision or list(manifest.models))]
    if ("fp32", True) in variants and manifest.models["fp32"].details.get("ort_optimized"):
        variants.append(("fp32", False))
    cli_labels = bundle_labels(bundle, args.cache / "compare-labels.txt") if args.analyze_cli else None
    if args.analyze_cli and cli_labels is None:
        print("no text label set in the bundle: the `analyze` rows are left out", flush=True)
    best: dict[str, Run] = {}
    labels = reference_top1 = None
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    for round_index in range(args.rounds):
        runs = [in_child(reference_run, str(checkpoint), files, window, hop, args.batch, args.threads)]
        if labels is None:
            labels, reference_top1 = prototypes(runs[0], files, window, hop)
        if args.torch_flush_denormal:
            runs.append(in_child(reference_run, str(checkpoint), files, window, hop, args.batch, args.threads, True))
        for precision, optimized in variants:
            runs.append(in_child(ours_run, str(bundle), precision, optimized, files, window, hop, args.batch,
                                 labels, args.threads))
        if cli_labels is not None:
            runs += [in_child(analyze_cli_run, bundle, cli_labels, precision, files, args.threads, args.batch)
                     for precision, optimized in variants if optimized]
        for run in runs:
            print(f"round {round_index + 1}: {run.name}: {run.total_s:.1f} s wall, {run.cpu_s:.1f} s CPU for "
                  f"{run.windows} windows (load {os.getloadavg()[0]:.1f})", flush=True)
            if run.name not in best or run.cpu_s < best[run.name].cpu_s:
                best[run.name] = run
    reference = next(iter(best.values()))
    fastest = min((r for r in best.values() if r.name.startswith("reference")), key=lambda r: r.cpu_s)
    rows = [summary_row(run, reference, fastest, None if run.name.startswith("reference") or run.top1 is None
                        or reference_top1 is None else fidelity(reference, run, reference_top1))
            for run in best.values()]
    info = {**machine_info(), "platform": platform.platform(), "window_s": args.window, "hop_s": args.hop,
            "batch": args.batch, "rounds": args.rounds, "recordings": len(files), "audio_s": reference.audio_s,
            "threads": args.threads, "torch": torch_version(),
            "load_average": f"{load_before} -> {' '.join(f'{v:.1f}' for v in os.getloadavg())}"}
    table = markdown(rows, info, fastest.name)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": rows}, indent=2), encoding="utf-8")


def torch_version() -> str:
    import torch

    return str(torch.__version__)


if __name__ == "__main__":
    main()
