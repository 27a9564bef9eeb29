"""Adding 1,000 labels × 3 templates: torch-free `labels add` (fp32 / INT8 text encoder) vs the torch route.

Each route runs end to end in its own subprocess, exactly as a user runs it (imports, loading the model,
tokenising, embedding, writing the label set): ``biolingual-export labels`` (transformers + torch) and
``biolingual-edge labels add --precision fp32|int8``. Reported: wall time, peak RSS (VmHWM), the ratio to
the torch route measured in the same run, the text encoder files' size on disk, and how far each route's
embeddings are from torch's. ``--compare-static`` also builds a static (calibrated Q/DQ) INT8 text encoder
and compares it with the dynamic one that ``text-onnx --precision int8`` ships.

    python benchmarks/text_encoder.py --workdir runs/text-bench [--size full] [--labels 1000] [--threads 2]
        [--skip-int8] [--baseline-repo /tmp/old-checkout]

``--baseline-repo`` adds the fp32 ``labels add`` of another checkout of this repository (e.g. the commit
before a change), run in the same loop, so a change is measured against its baseline in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

MIB = 1 << 20
TEMPLATES = ("{common}", "the sound of a {common}", "{scientific}, {common}")
WORDS = ("great", "plains", "toad", "spotted", "marsh", "frog", "little", "owl", "grey", "warbler", "eastern",
         "wood", "pewee", "horned", "lark", "barn", "swallow", "tree", "cricket", "katydid", "bat", "pipistrelle")
RUNNER = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
module, args = sys.argv[1], sys.argv[2:]
if module == "export":
    from export.cli import app
else:
    from edge.cli import app
try:
    app(args, prog_name=module, standalone_mode=False)
finally:
    hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": hwm / 1024}))
"""


def write_labels(path: Path, count: int) -> None:
    """``count`` distinct made-up species, each with a made-up scientific name."""
    names = (" ".join(w).title() for w in itertools.permutations(WORDS, 3))
    lines = [f"{name}; {name.split()[0]}us {name.split()[-1].lower()}i" for name in itertools.islice(names, count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_route(module: str, args: list[str], threads: int, repo: Path = REPO) -> dict[str, float]:
    """One CLI invocation of ``repo``'s code in a fresh interpreter; its wall time and peak RSS."""
    env_threads = {"OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", RUNNER, module, *args], capture_output=True, text=True,
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), **env_threads}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(workdir: Path, size: str, audio: Path, int8: bool = True) -> tuple[Path, Path, str]:
    """A random checkpoint of ``size``, its audio bundle, the fp32 text encoder, then the INT8 one.

    Returns the INT8 gate's verdict. Random weights make every text embedding nearly the same, which leaves
    INT8 noise nothing to hide behind; if the gate refuses it, the file is registered anyway (marked failed)
    so its speed and size can still be measured, and ``labels add`` runs it with ``--force-precision``.
    """
    checkpoint, bundle = workdir / f"checkpoint-{size}", workdir / f"bundle-{size}"
    steps = [("random-checkpoint", ["--size", size, "--out", str(checkpoint)], checkpoint / "config.json"),
             ("onnx", ["--model", str(checkpoint), "--out", str(bundle), "--parity-audio", str(audio)],
              bundle / "manifest.json"),
             ("text-onnx", ["--model", str(checkpoint), "--bundle", str(bundle)], bundle / "text_encoder.fp32.onnx")]
    for command, args, made in steps:
        if not made.exists():
            print(f"preparing: biolingual-export {command} …", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "export", command, *args], cwd=REPO, check=True)
    import dataclasses

    from edge.model.bundle import open_bundle
    from edge.scoring.text_encoder import PARITY_KEY
    from export.errors import ExportError
    from export.text_int8 import add_text_int8, quantize_text_dynamic
    from export.text_onnx import TEXT_FILES, register_text_encoder

    existing = open_bundle(bundle).manifest.text_encoders.get("int8")
    if not int8:
        return checkpoint, bundle, "not measured (--skip-int8)"
    if existing is not None:
        return checkpoint, bundle, str(existing.details.get(PARITY_KEY))
    try:
        gate = add_text_int8(bundle, audio).text_encoders["int8"].details[PARITY_KEY]
        return checkpoint, bundle, f"passed: {gate}"
    except ExportError as e:
        opened = open_bundle(bundle)
        quantize_text_dynamic(bundle / TEXT_FILES["fp32"], bundle / TEXT_FILES["int8"])
        fp32 = opened.manifest.text_encoders["fp32"]
        entry = dataclasses.replace(fp32, path=TEXT_FILES["int8"], precision="int8",
                                    details={**fp32.details, PARITY_KEY: {"passed": False, "reason": e.message}})
        register_text_encoder(opened, "int8", entry)
        return checkpoint, bundle, f"FAILED (measured anyway): {e.message}"


def static_int8(bundle: Path, out: Path, texts: list[str]) -> None:
    """Static Q/DQ INT8 of the fp32 text encoder, calibrated (min/max) on tokenised label prompts."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edge.scoring.text_encoder import TextEncoder

    tokenizer = TextEncoder.from_bundle(bundle).tokenizer
    batches = [tokenizer.encode(texts[i : i + 16]) for i in range(0, len(texts), 16)]

    class Reader:
        def __init__(self) -> None:
            self.feeds = iter([{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(bundle / "text_encoder.fp32.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gather"], calibrate_method=CalibrationMethod.MinMax)


def compare_static(bundle: Path, audio: Path, texts: list[str], threads: int) -> dict[str, dict[str, float]]:
    """Size, embedding time for ``texts`` and label-ranking agreement with fp32 of dynamic vs static INT8."""
    import dataclasses

    from edge.model.bundle import Bundle, open_bundle
    from edge.scoring.text_encoder import TextEncoder
    from export.text_int8 import audio_embeddings, compare
    from export.text_onnx import register_text_encoder

    results = {}
    with tempfile.TemporaryDirectory(prefix="text-static-") as tmp:
        copy = Path(shutil.copytree(bundle, Path(tmp) / "bundle"))
        opened = open_bundle(copy)
        static_int8(copy, copy / "text_encoder.int8-static.onnx", texts[: len(texts) // 2])
        entry = dataclasses.replace(opened.manifest.text_encoders["int8"], path="text_encoder.int8-static.onnx")
        static = Bundle(copy, register_text_encoder(opened, "int8", entry))
        held_out = texts[len(texts) // 2 :]
        reference = TextEncoder.from_bundle(copy, "fp32", threads).embed(held_out)
        windows = audio_embeddings(opened, audio)
        for name, source in (("dynamic", opened), ("static", static)):
            encoder = TextEncoder.from_bundle(source, "int8", threads, force_precision=True)
            start = time.perf_counter()
            candidate = encoder.embed(held_out)
            seconds = time.perf_counter() - start
            gate = compare(windows, reference, candidate)
            path = copy / source.manifest.text_encoders["int8"].path
            results[name] = {"size_mb": path.stat().st_size / MIB, "embed_s": seconds,
                             **dataclasses.asdict(gate), "passes_gate": gate.passed}
    return results


def per_text_cpu(checkpoint: Path, bundle: Path, texts: list[str]) -> dict[str, float]:
    """CPU ms per text of the embedding alone (no start-up), 1 thread each, same process, best of 2 rounds:
    the ONNX text tower as ``labels add`` batches it vs torch as ``biolingual-export labels`` runs it."""
    import torch

    from edge.scoring.text_encoder import TextEncoder
    from export.checkpoint import load_checkpoint
    from export.labels import TorchTextEmbedder

    torch.set_num_threads(1)
    onnx_encoder = TextEncoder.from_bundle(bundle, "fp32", threads=1)
    torch_encoder = TorchTextEmbedder(load_checkpoint(str(checkpoint)))
    routes = {"onnx fp32, sorted batches of 64": lambda: onnx_encoder.embed(texts),
              "torch fp32, one padded batch": lambda: torch_encoder.embed(texts)}
    best: dict[str, float] = {}
    for _ in range(2):
        for name, embed in routes.items():
            start = time.process_time()
            embed()
            best[name] = min(best.get(name, float("inf")), 1e3 * (time.process_time() - start) / len(texts))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--compare-static", action="store_true")
    parser.add_argument("--per-text", type=int, default=0, metavar="N",
                        help="also time the embedding alone on N prompts, ONNX vs torch, 1 thread (CPU ms/text)")
    parser.add_argument("--skip-int8", action="store_true", help="leave out the INT8 text encoder's route")
    parser.add_argument("--baseline-repo", type=Path,
                        help="another checkout whose fp32 `labels add` runs as a route of its own (the baseline)")
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint, bundle, int8_gate = prepare(args.workdir, args.size, args.audio, not args.skip_int8)
    labels = args.workdir / "labels.txt"
    write_labels(labels, args.labels)
    template_args = [a for t in TEMPLATES for a in ("--template", t)]
    fp32 = ["labels", "add", "--precision", "fp32", "--threads", str(args.threads)]
    routes = {
        "torch (biolingual-export labels)": ("export", ["labels", "--model", str(checkpoint)], REPO),
        "onnx fp32 (labels add)": ("edge", fp32, REPO),
    }
    if args.baseline_repo:
        routes[f"onnx fp32 (labels add, baseline {args.baseline_repo})"] = ("edge", fp32, args.baseline_repo)
    if not args.skip_int8:
        routes["onnx int8 (labels add)"] = ("edge", ["labels", "add", "--precision", "int8", "--threads",
                                                     str(args.threads), "--force-precision"], REPO)
    from edge.model.bundle import open_bundle
    from edge.scoring.labels import read_labels

    key = read_labels(labels).key
    results, embeddings = {}, {}
    for name, (module, route, repo) in routes.items():
        copy = args.workdir / "route-bundle"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(bundle, copy, copy_function=os.link)  # the CLI replaces files, never edits
        results[name] = run_route(module, [*route, "--bundle", str(copy), "--labels", str(labels), *template_args],
                                  args.threads, repo)
        with np.load(copy / open_bundle(copy).manifest.label_sets[key].path) as data:
            embeddings[name] = data["embeddings"]
    torch_name = next(iter(routes))
    torch_s = results[torch_name]["seconds"]
    manifest = open_bundle(bundle).manifest
    from edge.ops.bench import machine_info

    report = {
        "machine": machine_info(), "load_average": os.getloadavg(),
        "labels": args.labels, "templates": len(TEMPLATES), "size": args.size, "threads": args.threads,
        "int8_gate": int8_gate,
        "text_encoder_mb": {k: (bundle / e.path).stat().st_size / MIB for k, e in manifest.text_encoders.items()},
        "routes": {name: {**r, "speedup_vs_torch": torch_s / r["seconds"],
                          "max_abs_vs_torch": float(np.abs(embeddings[name] - embeddings[torch_name]).max()),
                          "min_cosine_vs_torch": float((embeddings[name] * embeddings[torch_name]).sum(1).min())}
                   for name, r in results.items()},
    }
    if args.compare_static:
        texts = [p for t in TEMPLATES for p in (t.format(common=n, scientific=s or n) for n, s in
                 zip(read_labels(labels).names, read_labels(labels).scientific_names))][:600]
        report["int8_dynamic_vs_static"] = compare_static(bundle, args.audio, texts, args.threads)
    if args.per_text:
        names = read_labels(labels)
        texts = [t.format(common=n, scientific=sci or n) for t in TEMPLATES
                 for n, sci in zip(names.names, names.scientific_names)][: args.per_text]
        report["embedding_cpu_ms_per_text"] = per_text_cpu(checkpoint, bundle, texts)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
