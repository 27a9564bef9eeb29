"""Review → fit-confidence → heads at the desk, and what a head costs the unit, in one run.

- Confidence: time to fit 100 labels × 200 verdicts (1000 bootstrap replicates per label).
- Heads: time to train (5-fold cross-validation + final fit) 20 label heads on 10 000 archived windows.
- Unit scorer: per-window cost of scoring 100 text labels alone and with 20 heads added, against the
  model's own time per window (ONNX Runtime fp32, full-size random checkpoint unless --bundle is given);
  the issue's budget is a scorer within 5 % of the model's time.

    python benchmarks/calibration_heads.py [--bundle BUNDLE] [--workdir runs/heads-bench]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.shared_audio import shared_audio  # noqa: E402

DIM = 512


def bench_calibration(labels: int, verdicts: int) -> float:
    from desk.review.confidence import ReviewFile, Verdict, fit_confidence

    rng = np.random.default_rng(0)
    rows = []
    for label in range(labels):
        scores = rng.uniform(0, 25, verdicts)
        correct = rng.random(verdicts) < 1 / (1 + np.exp(-(-6 + 0.5 * scores)))
        rows += [Verdict(f"label {label}", float(s), "yes" if c else "no") for s, c in zip(scores, correct)]
    start = time.perf_counter()
    result = fit_confidence(ReviewFile(tuple(rows), "key", "", "logit"))
    elapsed = time.perf_counter() - start
    assert sum(e["fitted"] for e in result["labels"].values()) == labels
    return elapsed


def bench_heads(labels: int, windows: int) -> float:
    from desk.review.train_head import TrainingSet, fit_head

    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(windows, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    directions = rng.normal(size=(labels, DIM)).astype(np.float32)
    start = time.perf_counter()
    for label in range(labels):
        truth = embeddings @ directions[label] > 0.5
        fit_head(TrainingSet(f"label {label}", embeddings, truth), zero_shot=embeddings @ directions[label])
    return time.perf_counter() - start


def bench_scorer(text_labels: int, heads: int, repeats: int = 2000) -> tuple[float, float]:
    """Microseconds per window for batch-1 scoring: text labels only, and with heads added."""
    from edge.scoring.scorer import LabelSet, Scorer

    rng = np.random.default_rng(2)
    text = rng.normal(size=(text_labels, DIM)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    head_set = LabelSet(tuple(f"h{i}" for i in range(heads)), rng.normal(size=(heads, DIM)).astype(np.float32),
                        rng.normal(size=heads).astype(np.float32))
    x = rng.normal(size=(1, DIM)).astype(np.float32)
    results = []
    for labels in (LabelSet(tuple(f"t{i}" for i in range(text_labels)), text),
                   LabelSet(tuple(f"t{i}" for i in range(text_labels)), text).with_head(head_set)):
        scorer = Scorer(labels, 100.0)
        scorer.score(x)
        start = time.perf_counter()
        for _ in range(repeats):
            scorer.score(x)
        results.append(1e6 * (time.perf_counter() - start) / repeats)
    return results[0], results[1]


def model_ms_per_window(bundle: Path, windows: int = 6) -> float:
    from edge.model.backends.ort import OrtBackend
    from edge.model.bundle import open_bundle

    opened = open_bundle(bundle)
    backend = OrtBackend(opened, "fp32", threads=1)
    params = opened.manifest.frontend
    features = np.random.default_rng(0).normal(-40, 20, (1, 1, params.n_frames, params.n_mels)).astype(np.float32)
    backend.embed(features)
    start = time.perf_counter()
    for _ in range(windows):
        backend.embed(features)
    return 1000 * (time.perf_counter() - start) / windows


def full_size_bundle(workdir: Path) -> Path:
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.synthetic import build_checkpoint

    bundle = workdir / "bundle"
    if not (bundle / "manifest.json").is_file():
        checkpoint = build_checkpoint(workdir / "checkpoint", "full", seed=0)
        export_fp32_bundle(load_checkpoint(str(checkpoint)), bundle, shared_audio())
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle whose model time is the reference (default: full size)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "heads-bench")
    args = parser.parse_args()
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    calibration_s = bench_calibration(100, 200)
    heads_s = bench_heads(20, 10_000)
    text_us, mixed_us = bench_scorer(100, 20)
    model_ms = model_ms_per_window(args.bundle or full_size_bundle(args.workdir))
    report = {
        "calibrate_100_labels_x_200_verdicts_s": round(calibration_s, 2),
        "train_20_heads_on_10k_windows_s": round(heads_s, 2),
        "scorer_us_per_window_100_text_labels": round(text_us, 1),
        "scorer_us_per_window_100_text_plus_20_heads": round(mixed_us, 1),
        "model_ms_per_window_fp32": round(model_ms, 1),
        "scorer_with_heads_fraction_of_model_time": round(mixed_us / 1000 / model_ms, 5),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
