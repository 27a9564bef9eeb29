"""What each lever buys the text tower: ONNX variants vs the torch route, interleaved in one process.

Every variant embeds the same prompts (``--labels`` made-up species × 3 templates, one ``embed`` call per
template as ``labels add`` makes them); rounds are interleaved (torch, then every ONNX variant, repeated) so
that other load on the machine hits all of them alike. Reported per variant: CPU ms per prompt (best
round), wall ms per prompt, tokens actually computed (padding included), the ratio to the torch route as
``biolingual-export labels`` runs it, and the largest difference from its embeddings.

Start-up is measured separately, each in a fresh interpreter: torch's imports + checkpoint load, and the
ONNX session's creation from the exported graph vs from a graph optimised and saved beforehand.

    python benchmarks/text_levers.py --workdir /tmp/tt/bench [--labels 1000] [--threads 1] [--rounds 2]

The workdir is the one ``benchmarks/text_encoder.py`` prepares (``checkpoint-full``, ``bundle-full``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from text_encoder import TEMPLATES, write_labels  # noqa: E402

Embed = Callable[[list[str]], np.ndarray]
STARTUP = {
    "torch: import transformers + load checkpoint": (
        "import time; t=time.perf_counter(); from export.checkpoint import load_checkpoint; "
        "load_checkpoint({checkpoint!r}); print(time.perf_counter()-t)"),
    "onnx: session from the exported graph (optimised at load)": (
        "import time; t=time.perf_counter(); from edge.scoring.text_encoder import TextEncoder; "
        "TextEncoder.from_bundle({bundle!r}, 'fp32', {threads}); print(time.perf_counter()-t)"),
    "onnx: session from the graph optimised at export": (
        "import time; t=time.perf_counter(); import onnxruntime as ort; o=ort.SessionOptions(); "
        "o.graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC; o.intra_op_num_threads={threads}; "
        "ort.InferenceSession({optimized!r}, o, providers=['CPUExecutionProvider']); print(time.perf_counter()-t)"),
}


def session(path: Path, threads: int, flush: bool = False, level: str = "all") -> object:
    """An ONNX Runtime CPU session of ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    if flush:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Counted:
    """Runs an ONNX session over the batches ``plan`` makes of the texts; counts the tokens it computes.

    Plans: ``chars`` (sorted by characters, runs of ``batch``: ``labels add`` before token-count batching),
    ``tokens`` (sorted by token count, runs of ``batch``, padded to each run's longest), ``exact`` (runs of
    at most ``batch`` texts of one token count, never padded: ``labels add`` now).
    """

    def __init__(self, tokenizer: object, sess: object, batch: int, plan: str) -> None:
        self.tokenizer, self.session, self.batch, self.plan = tokenizer, sess, batch, plan
        self.tokens = 0

    def batches(self, texts: list[str]) -> list[np.ndarray]:
        from edge.scoring.text_encoder import length_batches

        counts = self.tokenizer.token_counts(texts)  # type: ignore[attr-defined]
        if self.plan == "exact":
            return length_batches(counts, self.batch)
        order = np.argsort(counts if self.plan == "tokens" else [len(t) for t in texts], kind="stable")
        return [order[i : i + self.batch] for i in range(0, len(texts), self.batch)]

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows = np.empty((len(texts), 512), dtype=np.float32)
        for chunk in self.batches(texts):
            tokens = self.tokenizer.encode([texts[i] for i in chunk])  # type: ignore[attr-defined]
            self.tokens += tokens.input_ids.size
            feed = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
            rows[chunk] = self.session.run(["text_embeds"], feed)[0]  # type: ignore[attr-defined]
        return rows


def torch_routes(checkpoint_dir: Path, threads: int) -> dict[str, Embed]:
    """The torch route as shipped (one padded batch, no_grad) and at its best (sorted batches, inference_mode)."""
    import torch

    from edge.scoring.label_sets import MAX_TOKENS, normalise
    from export.checkpoint import load_checkpoint, projected
    from export.labels import TorchTextEmbedder

    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(str(checkpoint_dir))
    tokenizer, model = checkpoint.processor.tokenizer, checkpoint.model

    def best(texts: list[str]) -> np.ndarray:
        counts = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]]
        order = np.argsort(counts, kind="stable")
        rows = np.empty((len(texts), model.config.projection_dim), dtype=np.float32)
        for start in range(0, len(texts), 64):
            chunk = order[start : start + 64]
            tokens = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=MAX_TOKENS,
                               return_tensors="pt")
            with torch.inference_mode():
                out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            rows[chunk] = normalise(projected(out).numpy())
        return rows

    return {"torch as shipped: one padded batch, no_grad": TorchTextEmbedder(checkpoint).embed,
            "torch at its best: token-sorted batches of 64, inference_mode": best}


def fuse(source: Path, target: Path) -> dict[str, int]:
    """onnxruntime.transformers' BERT fusions (RoBERTa is model type ``bert``) of ``source`` into ``target``."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=768, opt_level=0,
                           use_gpu=False)
    fused.save_model_to_file(str(target))
    return {k: v for k, v in fused.get_fused_operator_statistics().items() if v}


def save_optimized(source: Path, target: Path) -> None:
    """ONNX Runtime's extended optimisation of ``source``, saved (what the unit would then load)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def onnx_routes(bundle: Path, work: Path, threads: int, batches: list[int]) -> tuple[dict[str, Counted], dict]:
    from edge.scoring.text_encoder import TextEncoder

    tokenizer = TextEncoder.from_bundle(bundle, "fp32", threads).tokenizer
    exported = bundle / "text_encoder.fp32.onnx"
    fused_path = work / "text_encoder.fp32.fused.onnx"
    fusions = fuse(exported, fused_path) if not fused_path.exists() else {"(cached)": 1}
    plain = session(exported, threads)
    routes = {"onnx before: char-sorted batches of 64": Counted(tokenizer, plain, 64, "chars"),
              "onnx token-sorted batches of 64 (padded)": Counted(tokenizer, plain, 64, "tokens")}
    for batch in batches:
        routes[f"onnx equal-token batches of <= {batch}"] = Counted(tokenizer, plain, batch, "exact")
    routes["onnx equal-token <= 64 + flush subnormals"] = Counted(tokenizer, session(exported, threads, flush=True),
                                                                   64, "exact")
    routes["onnx equal-token <= 64 + BERT fusions"] = Counted(tokenizer, session(fused_path, threads), 64, "exact")
    return routes, fusions


def startup(checkpoint: Path, bundle: Path, optimized: Path, threads: int, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` seconds of each start-up in a fresh interpreter, interleaved."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, code in STARTUP.items():
            script = code.format(checkpoint=str(checkpoint), bundle=str(bundle), optimized=str(optimized),
                                 threads=threads)
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                 check=True)
            best[name] = min(best.get(name, float("inf")), float(out.stdout.strip().splitlines()[-1]))
    return best


def measure(routes: dict[str, Embed], per_template: list[list[str]], rounds: int) -> dict[str, dict[str, float]]:
    """Best CPU and wall seconds per route over interleaved rounds; embeddings of the last round."""
    total = sum(len(t) for t in per_template)
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    out: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, embed in routes.items():
            if isinstance(embed, Counted):
                embed.tokens = 0
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            out[name] = np.concatenate([embed(texts) for texts in per_template])
            cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - start_cpu)
            wall[name] = min(wall.get(name, float("inf")), time.perf_counter() - start_wall)
    reference = next(iter(routes))
    result = {}
    for name, embed in routes.items():
        row = {"cpu_ms_per_prompt": 1e3 * cpu[name] / total, "wall_ms_per_prompt": 1e3 * wall[name] / total,
               "cpu_vs_torch_as_shipped": cpu[reference] / cpu[name],
               "max_abs_vs_torch": float(np.abs(out[name] - out[reference]).max())}
        if isinstance(embed, Counted):
            row["tokens_computed"] = embed.tokens
        result[name] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    args = parser.parse_args()
    from edge.ops.bench import machine_info
    from edge.scoring.label_sets import prompts
    from edge.scoring.labels import read_labels

    checkpoint, bundle = args.workdir / "checkpoint-full", args.workdir / "bundle-full"
    labels_file = args.workdir / f"labels{args.labels}.txt"
    write_labels(labels_file, args.labels)
    labels = read_labels(labels_file)
    per_template = [prompts(labels, t) for t in TEMPLATES]
    optimized = args.workdir / "text_encoder.fp32.saved-opt.onnx"
    if not optimized.exists():
        save_optimized(bundle / "text_encoder.fp32.onnx", optimized)
    onnx, fusions = onnx_routes(bundle, args.workdir, args.threads, args.batches)
    routes: dict[str, Embed] = {**torch_routes(checkpoint, args.threads), **onnx}
    counts = [[min(n, 77) for n in next(iter(onnx.values())).tokenizer.token_counts(t)] for t in per_template]
    report = {"machine": machine_info(), "load_average_before": os.getloadavg(), "threads": args.threads,
              "prompts": sum(len(t) for t in per_template), "bert_fusions": fusions,
              "tokens": {"real": sum(map(sum, counts)),
                         "one padded batch per template": sum(len(c) * max(c) for c in counts)},
              "embedding": measure(routes, per_template, args.rounds),
              "startup_s": startup(checkpoint, bundle, optimized, args.threads, args.rounds),
              "load_average_after": os.getloadavg()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
