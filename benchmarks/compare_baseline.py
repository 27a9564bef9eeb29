"""Reference (transformers ClapFeatureExtractor + torch get_audio_features, fp32) vs ours end to end.

One run, the same real recordings, the full-size default ClapConfig (random weights, cached):

* reference: decode + resample (soundfile/soxr, as ours) -> exact 480 000-sample windows on the same
  window/hop grid -> ``ClapFeatureExtractor`` (the checkpoint's own config) -> ``get_audio_features``;
* ours: decode -> resample -> windower -> streaming log-mel -> ONNX Runtime -> scoring, for every
  precision in the bundle (and fp32 on the exported, un-optimised graph, to show the graph step).

Each pipeline runs in its own spawned process per round (its own peak RSS, no shared caches); rounds
alternate the pipelines so a busy machine hurts them alike, and the best round of each is reported.
Every speed figure stands next to its fidelity against the reference embeddings of the same windows:
max abs difference, centred cosine (the reference mean embedding subtracted from both first, since
random-weight embeddings all point the same way) and top-1 agreement on a label set made of one
prototype per recording (the mean reference embedding of its windows).

    python benchmarks/compare_baseline.py [--audio ../shared/audio] [--cache /tmp/bench-cache] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.audio.files import find_audio_files, read_file, stream_file  # noqa: E402
from edge.audio.windowing import Window, Windower, clip_windows  # noqa: E402
from edge.errors import AudioError  # noqa: E402
from edge.stream.pipeline import batched_windows  # noqa: E402

DEFAULT_AUDIO = REPO.parent / "shared" / "audio"
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
    cpu_s: float = 0.0
    """CPU seconds of the whole process (all threads) over the same loop: steadier than wall time on a
    machine shared with other tenants."""
    embeddings: Any = None
    top1: Any = None


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
    """ClapFeatureExtractor + torch get_audio_features (fp32, eager), decode and resample included;
    ``flush_denormal``: with ``torch.set_flush_denormal(True)`` (not torch's default)."""
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
        t0 = time.perf_counter()
        features = extractor(windows, sampling_rate=RATE, return_tensors="np")["input_features"]
        t1 = time.perf_counter()
        with torch.no_grad():
            out = projected(model.get_audio_features(input_features=torch.from_numpy(features))).numpy()
        stages["frontend"] += t1 - t0
        stages["inference"] += time.perf_counter() - t1
        return out

    warm = read_file(files[0], RATE)[:window]
    embed([warm])
    stages = dict.fromkeys(stages, 0.0)
    first = time.perf_counter() - started
    begin, cpu = time.perf_counter(), time.process_time()
    for path in files:
        t0 = time.perf_counter()
        samples = read_file(path, RATE)
        windows = [w.samples for w in clip_windows(samples, window, hop)]
        stages["decode"] += time.perf_counter() - t0
        audio_s += samples.shape[0] / RATE
        for start in range(0, len(windows), batch):
            embeddings.append(embed(windows[start : start + batch]))
    total, cpu = time.perf_counter() - begin, time.process_time() - cpu
    name = "reference: ClapFeatureExtractor + torch fp32" + (" (flush denormals)" if flush_denormal else "")
    return Run(name, total, sum(e.shape[0] for e in embeddings), audio_s,
               first, peak_rss(), stages, cpu, np.concatenate(embeddings))


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
        t0 = time.perf_counter()
        features = frontend.batch(windows)
        t1 = time.perf_counter()
        out = backend.embed(features)
        t2 = time.perf_counter()
        scores = scorer.score(out)
        stages["frontend"] += t1 - t0
        stages["inference"] += t2 - t1
        stages["scoring"] += time.perf_counter() - t2
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
    total, cpu = time.perf_counter() - begin, time.process_time() - cpu
    stages["decode"] = total - sum(stages.values())
    kind = getattr(backend, "model_file", precision)
    return Run(f"ours {precision} ({kind})", total, sum(e.shape[0] for e in embeddings), audio_s, first,
               peak_rss(), stages, cpu, np.concatenate(embeddings), np.concatenate(top1))


def in_child(function: Any, *args: Any) -> Run:
    """Run ``function(*args)`` in a fresh spawned interpreter (own RSS, no warm caches from the others)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def ensure_bundle(cache: Path, audio: Path) -> tuple[Path, Path]:
    """The full-size random checkpoint and its fp32 bundle, built once into ``cache``."""
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
    return checkpoint, bundle


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


def summary_row(run: Run, reference: Run, quality: dict[str, float] | None) -> dict[str, Any]:
    per_window_ms = 1e3 * run.total_s / run.windows
    row = {"pipeline": run.name, "windows": run.windows, "windows_per_s": run.windows / run.total_s,
           "real_time_factor": run.audio_s / run.total_s, "ms_per_window": per_window_ms,
           "speedup_vs_reference": reference.total_s / run.total_s,
           "cpu_ms_per_window": 1e3 * run.cpu_s / run.windows, "cpu_speedup_vs_reference": reference.cpu_s / run.cpu_s,
           "frontend_ms_per_window": 1e3 * run.stages.get("frontend", 0.0) / run.windows,
           "frontend_speedup": reference.stages["frontend"] / max(run.stages.get("frontend", 0.0), 1e-12),
           "overhead_share": 1 - run.stages["inference"] / run.total_s,
           "first_window_s": run.first_window_s, "peak_rss_mib": run.peak_rss_mib,
           "stages_s": run.stages}
    if quality:
        row.update(quality)
    return row


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The results as a markdown table (speed next to fidelity)."""
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, INT8 features: {info['int8_flags']}; load average "
             f"{info['load_average']}; threads {info['threads'] or 'library default'}; window {info['window_s']:g} s, "
             f"hop {info['hop_s']:g} s, batch {info['batch']}, {info['recordings']} recordings, "
             f"{info['audio_s']:.0f} s of audio, {rows[0]['windows']} windows, best of {info['rounds']} rounds.", "",
             "| pipeline | windows/s | real-time × | ms/window | × reference | CPU ms/window | × reference (CPU) "
             "| frontend ms/window (×) | non-model share | first window s | peak RSS MiB | max abs "
             "| centred cos min / mean | top-1 agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        quality = ("reference", "—", "—") if "max_abs" not in r else (
            f"{r['max_abs']:.1e}", f"{r['centred_cosine_min']:.6f} / {r['centred_cosine_mean']:.6f}",
            "—" if np.isnan(r["top1_agreement"]) else f"{100 * r['top1_agreement']:.1f} %")
        lines.append(
            f"| {r['pipeline']} | {r['windows_per_s']:.2f} | {r['real_time_factor']:.1f} | {r['ms_per_window']:.1f} "
            f"| {r['speedup_vs_reference']:.2f} | {r['cpu_ms_per_window']:.1f} | {r['cpu_speedup_vs_reference']:.2f} "
            f"| {r['frontend_ms_per_window']:.2f} ({r['frontend_speedup']:.1f}×) "
            f"| {100 * r['overhead_share']:.0f} % | {r['first_window_s']:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {quality[0]} | {quality[1]} | {quality[2]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="folder of real recordings")
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
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the results table as markdown here")
    args = parser.parse_args()

    from edge.model.bundle import open_bundle
    from edge.ops.bench import machine_info

    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint, bundle = ensure_bundle(args.cache, args.audio)
    manifest = open_bundle(bundle).manifest
    files = recordings(args.audio)
    window, hop = round(args.window * RATE), round(args.hop * RATE)
    variants = [(p, True) for p in (args.precision or list(manifest.models))]
    if "fp32" in manifest.models and manifest.models["fp32"].details.get("ort_optimized"):
        variants.append(("fp32", False))
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
        for run in runs:
            print(f"round {round_index + 1}: {run.name}: {run.total_s:.1f} s for {run.windows} windows", flush=True)
            if run.name not in best or run.total_s < best[run.name].total_s:
                best[run.name] = run
    reference = next(iter(best.values()))
    rows = [summary_row(reference, reference, None)]
    rows += [summary_row(run, reference, fidelity(reference, run, reference_top1)) for run in list(best.values())[1:]]
    info = {**machine_info(), "platform": platform.platform(), "window_s": args.window, "hop_s": args.hop,
            "batch": args.batch, "rounds": args.rounds, "recordings": len(files), "audio_s": reference.audio_s,
            "threads": args.threads,
            "load_average": f"{load_before} -> {' '.join(f'{v:.1f}' for v in os.getloadavg())}"}
    table = markdown(rows, info)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
