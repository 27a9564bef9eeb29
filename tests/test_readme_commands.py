"""README.md and the CLI agree: every command line in the README parses against the real command tree.

Lines are parsed, never run (click's ``make_context``: options, arguments and their types are checked, no command
body executes). Code blocks are command lines a user copies: they must parse whole. The *Commands* table holds
synopses: every command it names must exist and every ``--option`` it shows must belong to that command.
``--help`` must show what the help strings say (rich markup once swallowed ``[ray]`` and ``[@START_S]``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from edge.cli import app as edge_app
from export.cli import app as export_app

README = Path(__file__).resolve().parents[1] / "README.md"
PROGRAMS = {"biolingual-edge": edge_app, "biolingual-export": export_app}
PLACEHOLDER = "..."
"""``analyze /data/season ... --resume``: the arguments of the line above, left out."""


def _blocks(text: str) -> Iterator[str]:
    """Lines of fenced and indented code blocks, continuation lines joined."""
    fenced = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            pending = ""
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        yield line


def _commands(line: str) -> Iterator[list[str]]:
    """Each ``biolingual-…`` invocation on a shell line, as argv (chains, redirections, comments, sudo dropped)."""
    line = re.sub(r"\s#.*$", "", line)
    for part in re.split(r"\s(?:&&|\||;)\s", line):
        part = re.split(r"\s>\s?", part)[0].strip()
        if not part.removeprefix("sudo ").startswith(tuple(PROGRAMS)):
            continue
        words = shlex.split(part)
        if words[:1] == ["sudo"]:
            words = words[1:]
        if words and words[0] in PROGRAMS:
            yield words


def _optional(words: list[str]) -> list[str]:
    """``[--detections]``, ``[--install B [--use 0.95]]``: optional parts written out; ``a|b`` -> ``a``."""
    out = []
    for word in words:
        word = word.lstrip("[")
        while word.endswith("]") and word.count("[") < word.count("]"):
            word = word[:-1]
        out.append(word.split("|")[0] if "|" in word and not word.startswith("-") else word)
    return out


def _resolve(argv: list[str], resilient: bool) -> tuple[Any, Any]:
    """Parse ``argv`` down the command tree; returns (command, its context). Raises what click raises."""
    command = typer.main.get_command(PROGRAMS[argv[0]])
    context = command.make_context(argv[0], argv[1:], resilient_parsing=resilient)
    while hasattr(command, "resolve_command"):
        rest = [*getattr(context, "_protected_args", []), *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context, resilient_parsing=resilient)
    return command, context


def _block_lines() -> list[list[str]]:
    lines = [argv for line in _blocks(README.read_text(encoding="utf-8")) for argv in _commands(line)]
    assert len(lines) > 20, "the README's code blocks were not found"
    return lines


@pytest.mark.parametrize("argv", _block_lines(), ids=lambda argv: " ".join(argv)[:80])
def test_every_readme_command_line_parses(argv: list[str]) -> None:
    words = _optional(argv)
    resilient = PLACEHOLDER in words  # "…" stands for the required arguments of the line above
    _resolve([w for w in words if w != PLACEHOLDER], resilient)


def _table_rows() -> list[str]:
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `((?:biolingual-edge|biolingual-export) [^`]*)` \|", line)
        if match:
            rows.append(match[1])
    assert len(rows) > 10, "the Commands table was not found"
    return rows


def _variants(synopsis: str) -> list[str]:
    """``config show / profiles`` -> ``config show``, ``config profiles`` (the last word of the first varies)."""
    head, *others = [s.strip() for s in synopsis.split(" / ")]
    stem = head.split()[:-1]
    return [head] + [" ".join([*stem, other]) for other in others]


@pytest.mark.parametrize("synopsis", _table_rows(), ids=lambda s: s[:60])
def test_the_commands_table_names_real_commands_and_options(synopsis: str) -> None:
    for variant in _variants(synopsis):
        words = variant.split()
        path = [words[0]] + [w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
        command, _ = _resolve_path(path)
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        shown = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", variant))
        assert shown <= known, f"{variant}: {sorted(shown - known)} not options of the command"


def _resolve_path(path: list[str]) -> tuple[Any, list[str]]:
    """The command named by the leading words of ``path`` (further words are its arguments)."""
    command = typer.main.get_command(PROGRAMS[path[0]])
    context = command.make_context(path[0], [], resilient_parsing=True)
    used = [path[0]]
    for word in path[1:]:
        if not hasattr(command, "resolve_command") or word not in command.list_commands(context):
            break
        command = command.get_command(context, word)
        context = command.make_context(word, [], parent=context, resilient_parsing=True)
        used.append(word)
    assert len(used) > 1 or not hasattr(command, "resolve_command"), f"{' '.join(path)}: no such command"
    return command, used


def _all_commands(program: str) -> Iterator[tuple[list[str], Any]]:
    root = typer.main.get_command(PROGRAMS[program])
    todo = [([program], root)]
    while todo:
        path, command = todo.pop()
        yield path, command
        if hasattr(command, "list_commands"):
            context = command.make_context(path[-1], [], resilient_parsing=True)
            todo += [([*path, name], command.get_command(context, name)) for name in command.list_commands(context)]


def test_help_shows_what_the_help_strings_say() -> None:
    """Bracketed text in a help string (``[ray]``, ``FILE[@START_S]``) survives rich's markup in ``--help``."""
    runner = CliRunner()
    checked = []
    for program in sorted(PROGRAMS):
        for path, command in _all_commands(program):
            texts = [p.help or "" for p in command.params] + [command.help or ""]
            wanted = {m for text in texts for m in re.findall(r"\S*\[[^\]\s]+\]\S*", text.replace("\\[", "["))}
            wanted = {w.rstrip(".,;:)'") for w in wanted if not w.startswith("[default")}
            if not wanted or getattr(command, "hidden", False):
                continue
            result = runner.invoke(PROGRAMS[program], [*path[1:], "--help"], env={"COLUMNS": "400"})
            assert result.exit_code == 0, result.output
            for text in wanted:
                assert text in result.output, f"{' '.join(path)} --help lost {text!r}"
                checked.append(text)
    assert "'biolingual-edge[ray]" in checked and "FILE[@START_S]" in checked, checked
