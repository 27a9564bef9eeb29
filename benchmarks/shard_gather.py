"""CPU time of one ``Shard.gather`` of a few rows: the shard's file kept open between gathers (now) against
opened, advised and closed on every call (before; emulated by closing it after each gather), interleaved rounds.

    python benchmarks/shard_gather.py [--rows 3] [--calls 20000] [--rounds 3]

A re-rank gathers a few rows from each of hundreds of shards per query, so the difference counts once per shard.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from desk.archive.shardfile import Shard, write_shard  # noqa: E402

SHARD_ROWS = 20_000
DIM = 512


def per_gather_us(shard: Shard, rows: np.ndarray, calls: int, reopen: bool) -> float:
    """CPU microseconds per gather (user + system)."""
    started = time.process_time()
    for _ in range(calls):
        shard.gather(rows)
        if reopen:
            shard.close()
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3, help="rows a gather asks for, spread over the shard")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="shard-gather-"))
    try:
        vectors = np.random.default_rng(0).standard_normal((SHARD_ROWS, DIM)).astype(np.float16)
        write_shard(folder / "shard.parquet", np.arange(1, SHARD_ROWS + 1), vectors)
        shard = Shard(folder / "shard.parquet")
        rows = np.linspace(0, SHARD_ROWS - 1, args.rows).astype(np.int64)
        print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}; {args.rows} rows a gather, "
              f"{args.calls} gathers a round")
        for number in range(args.rounds):
            before = per_gather_us(shard, rows, args.calls, reopen=True)
            now = per_gather_us(shard, rows, args.calls, reopen=False)
            print(f"round {number + 1}: CPU µs per gather: opened per call {before:.1f}, kept open {now:.1f} "
                  f"(saves {before - now:.1f} µs a shard a query)")
        shard.close()
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
