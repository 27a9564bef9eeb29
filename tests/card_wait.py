"""Waiting for observable state on a live card (a record written by a running daemon), never for a guessed time."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from desk.collect.cards import CardContents, read_card

POLL_S = 0.1


def wait_for_card(log_dir: Path, condition: Callable[[CardContents], Any], timeout_s: float,
                  what: str = "the awaited record") -> Any:
    """Poll ``log_dir`` until ``condition(card)`` is truthy and return that value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_dir.is_dir():
            found = condition(read_card(log_dir))
            if found:
                return found
        time.sleep(POLL_S)
    raise AssertionError(f"no {what} on the card within {timeout_s} s")


def first_event(kind: str) -> Callable[[CardContents], dict | None]:
    """A condition: the first ``kind`` event on the card."""
    return lambda card: next((r for r, _ in card.events if r["kind"] == kind), None)


def first_health(predicate: Callable[[dict], bool]) -> Callable[[CardContents], dict | None]:
    """A condition: the first heartbeat that satisfies ``predicate``."""
    return lambda card: next((r for r, _ in card.health if predicate(r)), None)


class StderrLines:
    """Collects a child process's stderr lines in a thread, so a test can wait for a logged line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self._thread = threading.Thread(target=self._collect, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _collect(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found:
                return found
            time.sleep(POLL_S)
        raise AssertionError(f"no stderr line with {text!r} within {timeout_s} s: {''.join(self.lines)[-2000:]}")

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)
