"""A unit in a process of its own, for `kill -9`: writes HOPS hops to its card, then keeps its uplink draining.

    python -m tests.uplink_unit CARD URL HOPS MAX_ROWS_PER_S
Prints ``written`` once the rows are on the card; never exits by itself.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.uplink_support import open_stream, unit_log, write_hops


def main() -> None:
    card, url, hops, rate = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    log = unit_log(card, url, max_rows_per_s=rate, rows_per_message=5, max_inflight=2)
    open_stream(log)
    write_hops(log, 0, hops)
    print("written", flush=True)
    while True:  # until killed: the test's kill -9 is the only way out
        signal.pause()


if __name__ == "__main__":
    main()
