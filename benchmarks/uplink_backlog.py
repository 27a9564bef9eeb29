"""The uplink's two figures, in one run against a real mosquitto on 127.0.0.1 (the test helpers start it):

* a 24 h backlog (a unit whose modem was down for a day, 5 s hop: effort per minute, a detection every 10 hops,
  a heartbeat a minute) delivered after reconnection, from the card to the desk's live database: time and rows/s
  at the default drain rate (``max_rows_per_s`` 200) and unthrottled;
* CPU of the uplink at a 5 s hop: the same card writer at real pace (one hop of effort + detection every 5 s,
  a heartbeat a minute, each flushed as the daemon does) with and without the uplink, process CPU time measured
  over the same wall time; the difference is the uplink's cost in % of one core (target: ≤ 2 %).

    python benchmarks/uplink_backlog.py [--seconds 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.card.cardlog import CardLog, UnitIdentity  # noqa: E402
from tests.cardlog_support import HOP, RATE, T0, WINDOW, event_at  # noqa: E402
from tests.mqtt_broker import Broker  # noqa: E402
from tests.uplink_support import card_counts, desk_added, live_desk, unit_log, wait_for  # noqa: E402

HOPS_PER_DAY = 24 * 3600 // 5
HOPS_PER_MINUTE = 12


def write_day(card: Path) -> dict[str, int]:
    """24 h of a unit at a 5 s hop, flushed once a minute (the rows a 24 h outage leaves waiting on the card)."""
    log = CardLog(card, UnitIdentity("AM-24", "bench"), RATE, {"config_hash": "bench"}, wall_clock=lambda: T0)
    log.open_stream(T0, 0, "ntp")
    for index in range(HOPS_PER_DAY):
        start = index * HOP
        log.effort(start, start + WINDOW)
        if index % 10 == 0:
            log.detections([event_at(start, "toad")])
        if index % HOPS_PER_MINUTE == 0:
            log.health({"temperature_c": 30.0})
            log.flush()
    log.close()
    return card_counts(card)


def drain(card: Path, broker: Broker, workdir: Path, name: str, rate: float) -> dict[str, Any]:
    expected = card_counts(card)
    with live_desk(broker.url, workdir / f"{name}.duckdb") as desk:
        started = time.monotonic()
        log = unit_log(card, broker.url, unit="AM-24", max_rows_per_s=rate)
        wait_for(lambda: desk_added(desk) == expected, 3600, "the backlog at the desk", lambda: desk_added(desk))
        seconds = time.monotonic() - started
        log.close()
    rows = sum(expected.values())
    return {"max_rows_per_s": rate, "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1)}


def cpu_at_hop(workdir: Path, broker: Broker | None, seconds: float, hop_s: float = 5.0) -> float:
    """Process CPU seconds of a card writer at real pace for ``seconds`` (with an uplink when ``broker``)."""
    card = workdir / ("cpu-uplink" if broker else "cpu-alone")
    log: Any = unit_log(card, broker.url, unit="AM-CPU") if broker else CardLog(
        card, UnitIdentity("AM-CPU", "bench"), RATE, {"config_hash": "bench"}, wall_clock=lambda: T0)
    log.open_stream(T0, 0, "ntp")
    cpu0, wall0 = time.process_time(), time.monotonic()
    index = 0
    while time.monotonic() - wall0 < seconds:
        start = index * HOP
        log.effort(start, start + WINDOW)
        log.detections([event_at(start, "toad")])
        if index % HOPS_PER_MINUTE == 0:
            log.health({"temperature_c": 30.0})
        log.flush()
        index += 1
        time.sleep(max(0.0, wall0 + index * hop_s - time.monotonic()))
    used = time.process_time() - cpu0
    log.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="wall time of each CPU measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="uplink-bench-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir / "broker")
        try:
            day_started = time.monotonic()
            counts = write_day(workdir / "card-default")
            write_day(workdir / "card-unthrottled")
            print(f"24 h card: {counts} (written in {time.monotonic() - day_started:.1f} s, two copies)")
            backlog = [drain(workdir / "card-default", broker, workdir, "default", 200.0),
                       drain(workdir / "card-unthrottled", broker, workdir, "unthrottled", 1e6)]
            for row in backlog:
                print(f"24 h backlog at max_rows_per_s={row['max_rows_per_s']:g}: {row['rows']} rows in "
                      f"{row['seconds']} s ({row['rows_per_s']} rows/s) from card to live database")
            alone = cpu_at_hop(workdir, None, args.seconds)
            with_uplink = cpu_at_hop(workdir, broker, args.seconds)
        finally:
            broker.stop()
    share = 100 * (with_uplink - alone) / args.seconds
    print(f"5 s hop for {args.seconds:g} s: card writer alone {alone:.3f} s CPU, with uplink {with_uplink:.3f} s CPU "
          f"-> uplink {share:.2f} % of one core (target <= 2 %)")
    if args.json:
        args.json.write_text(json.dumps({"backlog_24h": backlog, "cpu_alone_s": alone, "cpu_uplink_s": with_uplink,
                                         "seconds": args.seconds, "uplink_core_percent": share}, indent=2))


if __name__ == "__main__":
    main()
