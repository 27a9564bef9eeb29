"""Where an encoder's time goes in ONNX Runtime, and a same-run A/B of graphs and session options.

Each variant is a model file, optionally with ONNX Runtime session config entries after an ``@``
(``FILE@session.x64quantprecision=1,session.intra_op.allow_spinning=0``). All variants are loaded in this
process (subnormals flushed as the runtime does, batch 1, ``--threads`` intra-op threads), warmed up, then run
**interleaved** (one call of each per round), so a shared machine's load hits them alike. Per variant: kernel
time per operator type from a profiled session (each node's fastest of the ``--runs`` calls: a kernel that
lost its core for a while would otherwise count the wait, so the sum is optimistic), the process CPU time
(median and best) and wall time per call of a second, unprofiled session, and parity against the first
variant (max abs difference, least cosine of the embeddings) on the same input: real log-mel windows from
``--calibration`` (a ``calibrate`` folder), else random ones.

    python benchmarks/ort_op_profile.py BUNDLE/audio_encoder.fp32.opt.onnx BUNDLE/audio_encoder.int8.qdq.onnx
    python benchmarks/ort_op_profile.py INT8 INT8@session.x64quantprecision=1 --calibration CAL --runs 10
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.model.backends.denormals import flush_denormals, keep_float_mode  # noqa: E402
from edge.ops.bench import machine_line  # noqa: E402


@dataclass
class Variant:
    """One model file with its session config entries, and what its calls measured."""

    label: str
    path: Path
    config: dict[str, str]
    session: ort.InferenceSession | None = None
    """Profiled: its trace gives the kernel times."""
    timed: ort.InferenceSession | None = None
    """The same without the profiler: its calls give the CPU and wall time (the profiler's own cost left out)."""
    cpu_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """``FILE`` or ``FILE@KEY=VALUE[,KEY=VALUE…]`` -> a :class:`Variant`."""
    path, _, entries = text.partition("@")
    config: dict[str, str] = {}
    for entry in filter(None, entries.split(",")):
        key, sep, value = entry.partition("=")
        if not sep:
            raise SystemExit(f"error: '{entry}' in '{text}' is not KEY=VALUE\nhint: FILE@session.key=value,…")
        config[key.strip()] = value.strip()
    if not Path(path).is_file():
        raise SystemExit(f"error: no model file {path}\nhint: pass an .onnx file of a bundle")
    label = Path(path).name + (f"@{entries}" if config else "")
    return Variant(label, Path(path), config)


def open_session(variant: Variant, threads: int, profiled: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    for key, value in variant.config.items():
        options.add_session_config_entry(key, value)
    options.enable_profiling = profiled
    options.profile_file_prefix = f"/tmp/ort-op-profile-{os.getpid()}"
    with keep_float_mode():
        return ort.InferenceSession(str(variant.path), options, providers=["CPUExecutionProvider"])


def windows(calibration: Path | None, shape: list[int], count: int) -> list[np.ndarray]:
    """``count`` single-window inputs: real log-mel features when given a calibration folder."""
    if calibration is not None:
        features = np.load(calibration / "calibration.npz")["input_features"].astype(np.float32)
        return [features[i % features.shape[0]][None] for i in range(count)]
    rng = np.random.default_rng(0)
    return [rng.normal(-40, 20, shape).astype(np.float32) for _ in range(count)]


def kernel_times(session: ort.InferenceSession) -> collections.Counter[str]:
    """Microseconds of kernel time per operator type for one call: each node's fastest timed call."""
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    fastest: dict[str, tuple[str, int]] = {}
    first_run = True
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            first_run = False  # the first model_run event closes the warm-up call
            continue
        if not first_run and event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op, micros = event["args"]["op_name"], event["dur"]
            kept = fastest.get(event["name"])
            fastest[event["name"]] = (op, micros if kept is None else min(kept[1], micros))
    per_op: collections.Counter[str] = collections.Counter()
    for op, micros in fastest.values():
        per_op[op] += micros
    return per_op


def run_interleaved(variants: list[Variant], feeds: list[np.ndarray], threads: int) -> None:
    """Warm every variant up, then per round one timed call of each and one profiled call of each (same input
    per round for all)."""
    for variant in variants:
        variant.session, variant.timed = open_session(variant, threads), open_session(variant, threads, False)
        name = variant.session.get_inputs()[0].name
        with flush_denormals():
            variant.session.run(None, {name: feeds[0]})
            variant.timed.run(None, {name: feeds[0]})
    for feed in feeds:
        for variant in variants:
            assert variant.session is not None and variant.timed is not None
            name = variant.session.get_inputs()[0].name
            wall, cpu = time.perf_counter(), time.process_time()
            with flush_denormals():
                out = variant.timed.run(None, {name: feed})[0]
            variant.cpu_s.append(time.process_time() - cpu)
            variant.wall_s.append(time.perf_counter() - wall)
            variant.outputs.append(out)
        for variant in variants:
            assert variant.session is not None
            with flush_denormals():
                variant.session.run(None, {variant.session.get_inputs()[0].name: feed})


def parity(reference: Variant, variant: Variant) -> tuple[float, float]:
    """Max abs difference and least cosine of ``variant``'s embeddings against ``reference``'s."""
    a, b = np.concatenate(reference.outputs).astype(np.float64), np.concatenate(variant.outputs).astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.abs(a - b).max()), float(cosine.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="FILE or FILE@KEY=VALUE[,KEY=VALUE…] (session config entries)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls of each; each node counts its fastest")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--calibration", type=Path, help="a `calibrate` folder: its windows are the inputs")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.models]
    print(machine_line() + f"; {args.threads} thread(s), {args.runs} interleaved calls each")
    probe = open_session(variants[0], 1)
    shape = [d if isinstance(d, int) else 1 for d in probe.get_inputs()[0].shape]
    Path(probe.end_profiling()).unlink()
    run_interleaved(variants, windows(args.calibration, shape, args.runs), args.threads)
    print("\n| variant | kernel ms/window (sum of each node's fastest) | CPU ms/call median / best | wall ms/call "
          "(median) | max abs vs first | min cosine vs first |\n|---|---|---|---|---|---|")
    profiles = []
    for variant in variants:
        assert variant.session is not None
        per_op = kernel_times(variant.session)
        profiles.append(per_op)
        max_abs, cosine = parity(variants[0], variant)
        print(f"| {variant.label} | {sum(per_op.values()) / 1e3:.1f} | {1e3 * statistics.median(variant.cpu_s):.1f} / "
              f"{1e3 * min(variant.cpu_s):.1f} "
              f"| {1e3 * statistics.median(variant.wall_s):.1f} | {max_abs:.2e} | {cosine:.6f} |")
    for variant, per_op in zip(variants, profiles):
        total = sum(per_op.values())
        print(f"\n{variant.label}: {total / 1e3:.1f} ms/window of kernel time\n\n| op | ms/window | share |"
              "\n|---|---|---|")
        for op, micros in per_op.most_common(args.top):
            print(f"| {op} | {micros / 1e3:.1f} | {100 * micros / total:.0f} % |")


if __name__ == "__main__":
    main()
