"""The hang guard of our Ray jobs (desk/ray_stall.py), on plain iterators: rows pass in order, a source that stops
yielding fails within the stall limit, the limit follows the observed pace, and errors pass through; the flag that
sets it is checked and documented alike on every command."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from desk.ray_stall import DEFAULT_STALL_S, STALL_FACTOR, Stalled, guarded
from edge.errors import ConfigError


def test_rows_pass_in_order_and_the_end_ends() -> None:
    assert list(guarded(iter(range(50)), stall_s=5.0)) == list(range(50))


def test_a_source_that_stops_yielding_fails_after_the_stall_limit() -> None:
    never = threading.Event()

    def stuck() -> Iterator[int]:
        yield 1
        never.wait()  # a Ray job whose next row never comes
        yield 2

    rows = guarded(stuck(), stall_s=0.3)
    assert next(rows) == 1
    started = time.monotonic()
    with pytest.raises(Stalled) as stalled:
        next(rows)
    never.set()
    assert 0.3 <= stalled.value.waited_s <= time.monotonic() - started
    assert "no result for" in str(stalled.value)


def test_the_limit_follows_the_pace_of_the_job() -> None:
    """After a wait of ``slow`` for a row, a wait of ``STALL_FACTOR × slow / 2`` is still progress, although it is
    twice the configured minimum."""
    slow = 0.2
    minimum = STALL_FACTOR * slow / 4

    def paced() -> Iterator[int]:
        yield 0
        time.sleep(slow)
        yield 1
        time.sleep(STALL_FACTOR * slow / 2)
        yield 2

    assert list(guarded(paced(), stall_s=minimum)) == [0, 1, 2]


def test_time_spent_on_a_row_by_the_driver_is_not_waiting() -> None:
    rows = guarded(iter(range(3)), stall_s=0.1)
    taken = []
    for row in rows:
        time.sleep(0.3)  # writing a big result: three times the stall limit
        taken.append(row)
    assert taken == [0, 1, 2]


def test_an_error_of_the_job_reaches_the_driver_as_it_was() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("actor died")

    rows = guarded(failing(), stall_s=5.0)
    assert next(rows) == 1
    with pytest.raises(RuntimeError, match="actor died"):
        next(rows)


def test_closing_early_stops_the_reader() -> None:
    taken: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            taken.append(n)
            yield n
            n += 1

    before = set(threading.enumerate())
    rows = guarded(endless(), stall_s=5.0)
    assert next(rows) == 0
    readers = [t for t in set(threading.enumerate()) - before if t.name == "ray-rows"]
    assert len(readers) == 1
    rows.close()
    for reader in readers:
        reader.join(timeout=10)
    assert not any(t.is_alive() for t in readers)
    assert len(taken) < 20  # the reader went at most a few rows ahead, then stopped


def test_the_flag_is_refused_without_ray_or_below_zero_and_help_states_the_default(tmp_path: Path) -> None:
    from desk.archive.ray_scan import check_engine
    from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
    from edge.cli import app

    with pytest.raises(ConfigError, match="--ray-stall-seconds needs --engine ray"):
        analyze_paths([tmp_path], tmp_path / "labels.txt", tmp_path, tmp_path / "out", AnalyzeOptions(),
                      run=RunOptions(ray_stall_s=30.0))
    with pytest.raises(ConfigError, match="--ray-stall-seconds needs --engine ray"):
        check_engine("local", None, 30.0)
    with pytest.raises(ConfigError, match="--ray-stall-seconds 0 must be > 0"):
        check_engine("ray", None, 0.0)
    for command in (["analyze", "--help"], ["logs", "rescore", "--help"], ["logs", "search", "--help"]):
        shown = CliRunner().invoke(app, command, env={"COLUMNS": "300"}).output
        words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", shown).split())
        assert f"{STALL_FACTOR:g}× the longest wait so far if longer (default: {DEFAULT_STALL_S:g})" in words, words
