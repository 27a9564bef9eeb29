"""Indexed search on a real archive: where a query's time goes, and recall@10 against the exact scan.

    python benchmarks/rerank_curve.py --workdir W [--queries 20] [--candidates 400,1000,2000,4000] [--probes 8,16]

``W`` holds ``season.duckdb`` and its archive (``benchmarks/archive_season.py --workdir W --phases collect``).
The queries are ``--queries`` season draws (the benchmark mixture, as ``archive_season.py`` searches) and as many
archived windows plus noise (search by example); their exact top 10 comes from one scan of every window (kept in
``W/rerank-truth.npz`` for the next run). Reported, in this order:

* the cold start of an open archive: reading the index's segments into memory, then the first query (which
  also opens every shard it re-ranks from), wall and CPU seconds;
* for every (probes, candidates): recall@10 of the season and by-example queries, and the median wall and CPU
  milliseconds of each step of :meth:`~desk.archive.store.DuckShardStore.nearest` — the segments' search
  (``candidates``), the re-rank rows read from the shards (``gather``: the id → shard/row lookup and the reads),
  and the exact cosines and top 10 (``cosine``);
* the baseline of the same run: the same rows gathered through the shards' memory maps (the previous gather),
  each query's rows faulted in afresh (``mmap_fresh``) and already mapped (``mmap_mapped``), against ``preadv``;
* the shipped ``nearest`` (its own candidates and probes), end to end.

CPU time (user + sys of the process, faiss's threads included) is the figure to compare when the machine is
loaded; the load average is printed with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.archive_season import season_vectors  # noqa: E402

K = 10
NOISE = 0.02


class Clock:
    """Wall and CPU milliseconds of the steps of one query."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def time(self, step: str, work: Callable[..., Any], *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work(*args)
        self.wall.setdefault(step, []).append(1e3 * (time.perf_counter() - wall))
        self.cpu.setdefault(step, []).append(1e3 * (time.process_time() - cpu))
        return result

    def medians(self) -> dict[str, float]:
        found = {f"{s}_ms": float(np.median(v)) for s, v in self.wall.items()}
        return {**found, **{f"{s}_cpu_ms": float(np.median(v)) for s, v in self.cpu.items()}}


def queries_for(store: Any, count: int) -> np.ndarray:
    """``count`` season draws, then ``count`` archived windows plus noise (unit rows)."""
    rng = np.random.default_rng(7)
    season = season_vectors(rng, count)
    examples = store.embeddings(np.sort(rng.choice(np.arange(1, store.count() + 1), count, replace=False)))
    examples = examples + NOISE * rng.standard_normal(examples.shape, dtype=np.float32)
    examples /= np.linalg.norm(examples, axis=1, keepdims=True)
    return np.concatenate([season, examples]).astype(np.float32)


def exact_top(store: Any, queries: np.ndarray, cache: Path) -> np.ndarray:
    """``(Q, K)`` ids of each query's exact top 10: one scan of the archive for all of them (cached)."""
    if cache.is_file():
        kept = np.load(cache)
        if np.array_equal(kept["queries"], queries):
            return np.asarray(kept["ids"])
    best_ids = np.zeros((len(queries), 0), np.int64)
    best = np.zeros((len(queries), 0), np.float32)
    for chunk in store.scan(queries.T):
        scores = np.concatenate([best, chunk.cosines.T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(chunk.window_ids, (len(queries), len(chunk.window_ids)))], 1)
        keep = np.argpartition(-scores, K - 1, axis=1)[:, :K] if scores.shape[1] > K else np.argsort(-scores, 1)
        best, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    np.savez(cache, queries=queries, ids=best_ids)
    return best_ids


def step_by_step(store: Any, query: np.ndarray, candidates: int, probes: int, clock: Clock) -> np.ndarray:
    """:meth:`nearest` without a filter, its steps timed apart: the top 10 ids."""
    from desk.archive.windows import Scored, top_of

    index = store.ann()
    ids = clock.time("candidates", lambda: np.sort(index.candidates(query, candidates, probes)))
    rows = clock.time("gather", lambda: store.embeddings(ids))
    return clock.time("cosine", lambda: top_of([Scored(ids, np.einsum("ij,j->i", rows, query)[:, None])], K)[0])


def mmap_gather(store: Any, ids: np.ndarray, fresh: bool) -> np.ndarray:
    """The previous gather: the rows copied out of the shards' memory maps (``fresh``: each shard's pages dropped
    from this process first, so every row faults in as for a query whose rows this process has not read)."""
    firsts, _, names = store._spans
    place = np.searchsorted(firsts, ids, side="right") - 1
    out = np.empty((len(ids), 512), np.float16)
    for shard in np.unique(place):
        positions = np.flatnonzero(place == shard)
        mapped = store.shard(names[shard])
        if fresh:
            mapped.release()
        for inside, matrix in mapped.pieces(ids[positions] - firsts[shard]):
            out[positions[inside]] = matrix
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=20, help="season queries (and as many by example)")
    parser.add_argument("--candidates", default="400,1000,1500,2000,4000")
    parser.add_argument("--probes", default="8,16")
    args = parser.parse_args()
    from desk.archive.windows import EVERY_WINDOW, open_store
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    with open_store(args.workdir / "season.duckdb") as store:
        index = store.ann()
        clock = Clock()
        clock.time("open_segments", index.searcher)
        queries = queries_for(store, args.queries)
        clock.time("first_query", lambda: store.nearest(queries[0], K, approximate=True))
        print("cold", json.dumps({**{k: round(v, 1) for k, v in clock.medians().items()},
                                  "segments": len(index.segments), "index_mb": round(index.nbytes() / 1e6),
                                  "shards_opened": len(store._shards), "load_1min": os.getloadavg()[0]}), flush=True)
        started = time.perf_counter()
        truth = exact_top(store, queries, args.workdir / "rerank-truth.npz")
        print("truth", json.dumps({"queries": len(queries), "s": round(time.perf_counter() - started, 1)}), flush=True)
        half = args.queries
        for probes in (int(p) for p in args.probes.split(",")):
            for candidates in (int(c) for c in args.candidates.split(",")):
                clock = Clock()
                found = [len(set(step_by_step(store, q, candidates, probes, clock).tolist()) & set(t.tolist())) / K
                         for q, t in zip(queries, truth)]
                row = {"probes": probes, "candidates": candidates, "recall10_season": float(np.mean(found[:half])),
                       "recall10_example": float(np.mean(found[half:])), **clock.medians()}
                row["total_ms"] = sum(row[f"{s}_ms"] for s in ("candidates", "gather", "cosine"))
                row["total_cpu_ms"] = sum(row[f"{s}_cpu_ms"] for s in ("candidates", "gather", "cosine"))
                print("curve", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                                          | {"load_1min": os.getloadavg()[0]}), flush=True)
        clock = Clock()
        for query in queries:
            ids = np.sort(index.candidates(query, int(args.candidates.split(",")[-1]), 16))
            clock.time("preadv", store.embeddings, ids)
            clock.time("mmap_fresh", mmap_gather, store, ids, True)
            clock.time("mmap_mapped", mmap_gather, store, ids, False)
        print("gather", json.dumps({**{k: round(v, 2) for k, v in clock.medians().items()},
                                    "rows": int(args.candidates.split(",")[-1]), "load_1min": os.getloadavg()[0]}),
              flush=True)
        clock = Clock()
        found = [len(set(clock.time("nearest", store.nearest, q, K, EVERY_WINDOW, True)[0].tolist())
                     & set(t.tolist())) / K for q, t in zip(queries, truth)]
        print("shipped", json.dumps({**{k: round(v, 2) for k, v in clock.medians().items()},
                                     "recall10_season": float(np.mean(found[:half])),
                                     "recall10_example": float(np.mean(found[half:])),
                                     "load_1min": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
