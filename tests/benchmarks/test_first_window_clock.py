"""The daemon benchmarks time the first analysed window from the process start: they listen for the daemon's own
``READY=1`` (edge/daemon/notify.py) on a ``NOTIFY_SOCKET`` of theirs, as systemd does."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from benchmarks import daemon_memory
from benchmarks.boot_time import ReadyWatch

CHILD = """
import sys, time
from edge.daemon import notify
started = time.perf_counter()
notify.watchdog()                      # not READY: the clock must not stop here
sum(i * i for i in range({work}))      # the start-up the benchmark is there to see
notify.ready("analysing")
print(time.perf_counter() - started)
"""


def test_ready_is_counted_from_the_process_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with ReadyWatch() as watch:
        monkeypatch.setenv("NOTIFY_SOCKET", watch.address)
        watch.start()
        child = subprocess.run([sys.executable, "-c", CHILD.format(work=2_000_000)], capture_output=True, text=True,
                               check=True)
        assert watch.wait(60)
        own = float(child.stdout)  # the child's time from its own first line to READY=1
        assert watch.ready_s is not None
        assert own < watch.ready_s < time.perf_counter() - watch.started  # the interpreter's start is counted


def test_daemon_memory_reports_both_clocks() -> None:
    wall, max_rss, cpu, _, first_window = daemon_memory.time_v_run(
        [sys.executable, "-c", CHILD.format(work=200_000)], daemon_memory.REPO)
    assert 0 < first_window < wall
    assert max_rss > 0 and cpu > 0
    no_ready = daemon_memory.time_v_run([sys.executable, "-c", "pass"], daemon_memory.REPO)
    assert math.isnan(no_ready[4])  # never ready: said so, not a number from somewhere else


def test_the_watch_keeps_reading_after_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon sends WATCHDOG=1 after every window: a listener that stopped at READY=1 let the socket's queue
    fill, and the daemon's next send blocked for good (a benchmark daemon stalled after ~10 windows)."""
    after_ready = "from edge.daemon import notify\nnotify.ready('analysing')\nfor _ in range(500): notify.watchdog()\n"
    with ReadyWatch() as watch:
        monkeypatch.setenv("NOTIFY_SOCKET", watch.address)
        watch.start()
        subprocess.run([sys.executable, "-c", after_ready], check=True, timeout=60)
        assert watch.wait(10)
