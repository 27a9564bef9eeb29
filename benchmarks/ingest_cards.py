"""Collect 20 synthetic cards (>= 1 M detection rows) written by the real card-log writer; time the ingest.

Baseline, measured in the same run on the same files: DuckDB's own ``read_csv`` loading the detection segments
straight into a table (no torn-line handling, no dedupe, no checks): the ratio shows what the collector's
safety costs.

    python benchmarks/ingest_cards.py [--cards 20] [--rows-per-card 50000] [--days 14] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from desk.collect.database import connect
from desk.collect.ingest import collect
from edge.card.cardlog import CardLog, UnitIdentity
from edge.stream.detector import DetectionEvent

RATE = 48_000
WINDOW = 10 * RATE
HOP = 5 * RATE
HOPS_PER_FLUSH = 60
"""One flush (fsync) per 5 minutes of audio: the writer's cost per batch is not what is measured here."""
LABELS = ("toad", "wood frog", "barred owl", "spring peeper", "green frog", "american bullfrog")
START = datetime(2024, 5, 1, tzinfo=timezone.utc)


def write_card(root: Path, unit: int, rows: int, days: int, rng: random.Random) -> int:
    """One unit's card: two boots (a restart half-way), detections at random hops, effort for every hop."""
    hops = days * 86_400 * RATE // HOP
    chance = rows / hops
    written = 0
    for boot in range(2):
        first, last = boot * hops // 2, (boot + 1) * hops // 2
        info = {"config_hash": "cfg-b" if unit == 7 else "cfg-a", "thresholds": {"toad": 0.5 if unit == 7 else 0.3},
                "window_s": 10, "hop_s": 5}
        log = CardLog(root, UnitIdentity(f"AM-{unit:02d}", "bench-2024"), RATE, info)
        log.open_stream(START + timedelta(seconds=first * HOP / RATE), first * HOP, "ntp")
        for batch_start in range(first, last, HOPS_PER_FLUSH):
            batch_end = min(batch_start + HOPS_PER_FLUSH, last)
            events = [DetectionEvent(h * HOP, h * HOP + WINDOW, rng.choice(LABELS), rng.uniform(0.3, 3.0),
                                     rng.uniform(0.1, 0.4), h * HOP, 2)
                      for h in range(batch_start, batch_end) if rng.random() < chance]
            log.detections(events)
            log.effort(batch_start * HOP, batch_end * HOP + WINDOW - HOP)
            written += len(events)
            log.flush()
        log.close()
    return written


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=20)
    parser.add_argument("--rows-per-card", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards when given")
    args = parser.parse_args()
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    try:
        started = time.perf_counter()
        cards = [work / f"card-{i:02d}" for i in range(args.cards)]
        rows = sum(write_card(card, i, args.rows_per_card, args.days, rng) for i, card in enumerate(cards))
        write_s = time.perf_counter() - started
        card_bytes = sum(folder_bytes(c) for c in cards)
        print(f"wrote {args.cards} cards, {rows:,} detection rows, {card_bytes / 1e6:.1f} MB in {write_s:.1f} s "
              f"(real writer, {rows / write_s:,.0f} rows/s)")

        db = work / "collected.duckdb"
        db.unlink(missing_ok=True)
        started = time.perf_counter()
        result = collect(cards, db)
        ingest_s = time.perf_counter() - started
        total = sum(result.read.values())
        print(f"collect: {ingest_s:.1f} s for {result.read['detections']:,} detections + "
              f"{total - result.read['detections']:,} other records -> {result.read['detections'] / ingest_s:,.0f} "
              f"detection rows/s ({total / ingest_s:,.0f} records/s); DB {db.stat().st_size / 1e6:.1f} MB; "
              f"{len(result.findings)} finding(s): {sorted({f.check for f in result.findings})}")

        started = time.perf_counter()
        again = collect(cards, db)
        print(f"re-collect (idempotent): {time.perf_counter() - started:.1f} s, added "
              f"{sum(again.added.values())} rows")

        baseline_db = work / "baseline.duckdb"
        baseline_db.unlink(missing_ok=True)
        con = connect(baseline_db)
        started = time.perf_counter()
        con.execute("CREATE TABLE raw AS SELECT * FROM read_csv(?, header = true)",
                    [[str(p) for c in cards for p in (c / "detections").glob("*.csv")]]).fetchall()
        baseline_s = time.perf_counter() - started
        baseline_rows = con.execute("SELECT count(*) FROM raw").fetchall()[0][0]
        con.close()
        print(f"baseline (DuckDB read_csv of the detection files only): {baseline_s:.2f} s for {baseline_rows:,} rows; "
              f"collect / baseline = {ingest_s / baseline_s:.1f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
