"""Where an encoder's time goes in ONNX Runtime: kernel time per operator type, as run (after ORT's fusions).

Each file runs in this process with ORT's profiler on (1 thread, subnormals flushed as the runtime does,
batch 1, after a warm-up); the table gives each operator type's share of the kernel time and ms per window,
so the shares of two precisions can be compared even when a shared machine inflates the absolute numbers.
Each node's time is its fastest of the ``--runs`` calls: on a shared machine a kernel that lost its core
for a while would otherwise count the wait.

    python benchmarks/ort_op_profile.py BUNDLE/audio_encoder.fp32.opt.onnx BUNDLE/audio_encoder.int8.qdq.onnx
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.model.backends.denormals import flush_denormals, keep_float_mode  # noqa: E402
from edge.ops.bench import machine_info  # noqa: E402


def profile(path: Path, runs: int) -> collections.Counter[str]:
    """Microseconds of kernel time per operator type for one call: each node's fastest of ``runs`` calls."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.enable_profiling = True
    options.profile_file_prefix = f"/tmp/ort-op-profile-{os.getpid()}"
    with keep_float_mode():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    features = np.random.default_rng(0).normal(-40, 20, shape).astype(np.float32)
    feed = {session.get_inputs()[0].name: features}
    with flush_denormals():
        for _ in range(runs + 1):
            session.run(None, feed)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=5, help="timed calls; each node counts its fastest")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    info = machine_info()
    print(f"CPU: {info['cpu']}; INT8 features: {info['int8_flags']}; ONNX Runtime {info['onnxruntime']}; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for path in args.models:
        per_op = profile(path, args.runs)
        total = sum(per_op.values())
        print(f"\n{path.name}: {total / 1e3:.1f} ms/window of kernel time\n\n| op | ms/window | share |"
              "\n|---|---|---|")
        for op, micros in per_op.most_common(args.top):
            print(f"| {op} | {micros / 1e3:.1f} | {100 * micros / total:.0f} % |")


if __name__ == "__main__":
    main()
