"""The hang guard of every Ray job of ours: a job whose results stop coming fails instead of waiting forever.

Ray never times a task out: a worker that blocks, a node that stops answering but is not declared dead, or a
task waiting for CPUs a lost node took with it, leaves the driver waiting in ``iter_rows`` for ever. The rows
are read here in a helper thread instead, and the driver gives up when it has waited for the next row for the *stall
limit*: ``max(--ray-stall-seconds, STALL_FACTOR × the longest wait for a row so far)`` (time the driver spends
writing a result is not waiting). The first row's wait
(workers starting, a bundle loading) counts only against ``--ray-stall-seconds``; after it, the limit follows the
job's own pace, so a job of slow pieces is not cut short and a job of fast ones is not left hanging long.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TypeVar

DEFAULT_STALL_S = 600.0
"""``--ray-stall-seconds``: the least time without a result before a Ray job is declared stalled."""
STALL_FACTOR = 10.0
"""The stall limit is at least this many times the longest wait between two results seen so far."""
AHEAD = 4
"""Rows the reader thread may take from Ray ahead of the driver (Ray's own back-pressure still holds)."""

Row = TypeVar("Row")


class Stalled(Exception):
    """No row came within the stall limit."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"no result for {waited_s:.0f} s")
        self.waited_s = waited_s


def stall_cause(error: Stalled) -> str:
    """The cause of a stalled job in words, for the job's one-line error."""
    return (f"no result came for {error.waited_s:.0f} s (a worker or node stopped answering, or the cluster has no "
            "free CPUs left for the job)")


def stall_hint(limit_s: float) -> str:
    """The part of a stalled job's hint that says how to allow slower results."""
    return f"a job whose results are slower than this needs a larger --ray-stall-seconds (it was {limit_s:g})"


@dataclass
class _End:
    error: BaseException | None = None


def check_stall_seconds(seconds: float) -> float:
    """``--ray-stall-seconds`` checked: a positive number of seconds."""
    from edge.errors import ConfigError

    if not seconds > 0:
        raise ConfigError(f"--ray-stall-seconds {seconds:g} must be > 0",
                          f"the default is {DEFAULT_STALL_S:g}; pass more for a cluster that starts slowly")
    return seconds


def guarded(rows: Iterable[Row], stall_s: float) -> Generator[Row, None, None]:
    """``rows`` (a Ray Data iterator) as they come; raises :class:`Stalled` when the stall limit passes without
    one. Errors of the iteration are raised here as they were. Closing this iterator early stops the reader."""
    inbox: queue.Queue[Row | _End] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(rows, inbox, stop), name="ray-rows", daemon=True)
    reader.start()
    longest = 0.0
    first = True
    try:
        while True:
            limit = max(stall_s, STALL_FACTOR * longest)
            asked = time.monotonic()
            try:
                item = inbox.get(timeout=limit)
            except queue.Empty:
                raise Stalled(time.monotonic() - asked) from None
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            if not first:
                longest = max(longest, time.monotonic() - asked)
            first = False
            yield item
    finally:
        stop.set()


def _read(rows: Iterable[Row], inbox: queue.Queue[Row | _End], stop: threading.Event) -> None:
    """The reader thread: every row into ``inbox`` until ``stop``, then the end (or the error)."""
    end = _End()
    try:
        for row in rows:
            if not _put(inbox, row, stop):
                return
    except BaseException as e:  # handed to the driver's thread, which raises it
        end = _End(e)
    _put(inbox, end, stop)


def _put(inbox: queue.Queue[Row | _End], item: Row | _End, stop: threading.Event) -> bool:
    """``item`` into ``inbox``, waiting while it is full, unless ``stop`` comes first; whether to go on (no stop)."""
    while not stop.is_set():
        try:
            inbox.put(item, timeout=0.5)
            break
        except queue.Full:
            continue
    return not stop.is_set()
