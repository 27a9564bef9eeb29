"""Shared CLI plumbing: typed errors become one red line plus a hint and an exit code, never a traceback."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from edge.errors import ConfigError, EdgeError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

stderr = Console(stderr=True, highlight=False)


def report_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a typer command so :class:`EdgeError` prints ``error: …`` / ``hint: …`` and exits non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except EdgeError as e:
            stderr.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
            if e.hint:  # escaped: a hint like pip install 'pkg[extra]' is text, not rich markup
                stderr.print(f"[yellow]hint:[/] {escape(e.hint)}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def setup_logging(verbose: bool) -> None:
    """Our packages at INFO (DEBUG with --verbose), third-party libraries at WARNING; one line per record."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("edge", "export", "calibration"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def renamed(new_value: T | None, old_value: T | None, old: str, new: str) -> T | None:
    """The value of an option whose spelling changed: ``old`` still works for now and says ``new``."""
    if old_value is None:
        return new_value
    stderr.print(f"note: {old} is now {new}; the old spelling still works for now", soft_wrap=True)
    if new_value is not None and new_value != old_value:
        raise ConfigError(f"both {new} and its old spelling {old} given", f"pass {new} only")
    return old_value


def renamed_command(fn: Callable[P, R], old: str, new: str) -> Callable[P, R]:
    """A command under its old name (hidden from --help): runs ``fn`` after saying the new name."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        stderr.print(f"note: {old} is now {new}; the old name still works for now", soft_wrap=True)
        return fn(*args, **kwargs)

    return wrapper

HEAD_HELP = ("Trained head of the bundle (repeatable; made by `logs train-head --name`): its labels replace the "
             "same-named labels' zero-shot scores, other labels of the head are added.")
"""Help of --head on run, analyze and logs rescore: the one way to choose heads."""
