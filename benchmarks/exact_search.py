"""The exact search command over a season archive, against a baseline checkout measured in the same run.

    python benchmarks/archive_season.py --windows 1000000 --units 20 --workdir W --phases write,collect
    git worktree add --detach /tmp/base main     # or any commit to compare with
    python benchmarks/exact_search.py --workdir W --baseline /tmp/base

Each round runs, for the baseline and for this checkout in turn, one fresh process that times ``search(...,
approximate=False)`` (``desk.archive.search``: the store opened, the space chosen, every window ranked, the hits'
metadata read; what ``logs search --exact`` does between its query embedding and its output files): its first
query (imports included), then warm queries, wall and CPU (user + system, every thread) seconds, and the ranking
alone (``store.nearest`` in an open store). Rounds alternate so that both checkouts see the same load; medians over
rounds are printed with their ratio, and the load average. The hits of both checkouts must be equal (ids and
cosines, bit for bit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

CHILD = """
import json, os, sys, time
import numpy as np
from pathlib import Path
started = time.perf_counter(), time.process_time()
from desk.archive.search import search
from desk.archive.windows import WindowFilter, open_store
from edge.model.bundle import open_bundle
work, queries = Path(sys.argv[1]), np.load(sys.argv[2])
bundle, db = open_bundle(work / "bundle"), work / "season.duckdb"
def timed(run):
    wall, cpu = time.perf_counter(), time.process_time()
    found = run()
    return found, time.perf_counter() - wall, time.process_time() - cpu
hits = [search(db, bundle, queries[0], 10, WindowFilter(), approximate=False)]
first = time.perf_counter() - started[0], time.process_time() - started[1]
warm = []
for query in queries[1:]:
    found, wall, cpu = timed(lambda: search(db, bundle, query, 10, WindowFilter(), approximate=False))
    hits.append(found)
    warm.append((wall, cpu))
with open_store(db) as store:
    store.nearest(queries[0], 10)
    ranking = [timed(lambda: store.nearest(query, 10))[1:] for query in queries[1:]]
print(json.dumps({"first_s": first[0], "first_cpu_s": first[1],
                  "warm_s": float(np.median([w for w, _ in warm])),
                  "warm_cpu_s": float(np.median([c for _, c in warm])),
                  "ranking_s": float(np.median([w for w, _ in ranking])),
                  "ranking_cpu_s": float(np.median([c for _, c in ranking])),
                  "hits": [[[h.meta["window_id"], h.score] for h in found] for found in hits]}))
"""


def measure(tree: Path, work: Path, queries: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(work), str(queries)], cwd=tree, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a season of archive_season.py (collected)")
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=6, help="queries per process (the first one cold)")
    args = parser.parse_args()
    from archive_season import season_vectors

    queries = args.workdir / "exact_search_queries.npy"
    np.save(queries, season_vectors(np.random.default_rng(7), args.queries))
    trees = {"baseline": args.baseline.resolve(), "this": REPO}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    loads = []
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(measure(tree, args.workdir, queries))
            loads.append(os.getloadavg()[0])
    if runs["baseline"][0]["hits"] != runs["this"][0]["hits"]:
        raise SystemExit("the two checkouts' hits differ")
    keys = ("first_s", "first_cpu_s", "warm_s", "warm_cpu_s", "ranking_s", "ranking_cpu_s")
    medians = {name: {k: float(np.median([r[k] for r in found])) for k in keys} for name, found in runs.items()}
    for name in trees:
        print(name, json.dumps({k: round(v, 4) for k, v in medians[name].items()}))
        print(f"  {name} rounds:", json.dumps([{k: round(r[k], 4) for k in keys} for r in runs[name]]))
    print("ratio baseline/this", json.dumps({k: round(medians["baseline"][k] / medians["this"][k], 3) for k in keys}))
    print(f"hits equal (ids and cosines); load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
