"""``config show``: the resolved config as a commented YAML file someone can save and edit (``> unit.yaml``).

Comments are carried over from the file or profile it came from, key by key; paths are written relative to
where the output is saved (the working directory) or, for a shipped profile, as the profile wrote them, so the
file never points into this machine's install folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from edge.config.loader import PATH_KEYS
from edge.config.schema import UnitConfig

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")
COMMENT_COLUMN = 34
"""Column where a key's comment starts (the shipped profiles' layout)."""
INDENT = "  "


def key_comments(text: str) -> tuple[list[str], dict[str, str]]:
    """(comment lines before the first key, dotted key -> its end-of-line comment) of a YAML file's text."""
    header: list[str] = []
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if match is None:
            if not stack and line.startswith("#"):
                header.append(line)
            continue
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        stack.append((depth, match["key"]))
        comment = _end_comment(match["rest"])
        if comment:
            comments[".".join(key for _, key in stack)] = comment
    return header, comments


def _end_comment(rest: str) -> str:
    """The ``# …`` part of a value, outside quotes."""
    quote = ""
    for i, char in enumerate(rest):
        if char in "\"'" and not quote:
            quote = char
        elif char == quote:
            quote = ""
        elif char == "#" and not quote and (i == 0 or rest[i - 1].isspace()):
            return rest[i:].strip()
    return ""


def _flow(value: Any) -> str:
    """One value in YAML flow style (``[int8, fp32]``, ``'04:00'``, ``null``)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _shown_path(value: str, profile_dir: Path | None, cwd: Path) -> str:
    path = Path(value)
    for base in (profile_dir, cwd):
        if base is not None and path.is_relative_to(base):
            return os.path.relpath(path, base)
    return value


def render_config(config: UnitConfig, source_text: str, profile_dir: Path | None, cwd: Path,
                  origin: str, given: Mapping[str, Any] | None = None) -> str:
    """Commented YAML of ``config``; ``profile_dir`` is the shipped profile's folder when it came from one.

    A path set on the command line (``given``, dotted key -> value) is written as the user wrote it when that
    was absolute: what they set is what they see.
    """
    data = config.to_yaml_dict()
    given = given or {}
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        if data.get(section, {}).get(key):
            as_given = given.get(dotted)
            absolute = as_given is not None and Path(str(as_given)).is_absolute()
            data[section][key] = (str(data[section][key]) if absolute
                                  else _shown_path(str(data[section][key]), profile_dir, cwd))
    header, comments = key_comments(source_text)
    lines = [f"# Written by `biolingual-edge config show` from {origin} on {date.today().isoformat()}.",
             "# Relative paths are relative to the folder this file is in.", *header]
    _emit(data, "", 0, comments, lines)
    return "\n".join(lines) + "\n"


def _emit(data: dict[str, Any], prefix: str, depth: int, comments: dict[str, str], lines: list[str]) -> None:
    indent = INDENT * depth
    for name, value in data.items():
        dotted, key = f"{prefix}{name}", _flow(name)
        comment = comments.get(dotted, "")
        if isinstance(value, dict) and value:
            if depth == 0:
                lines.append("")
            lines.append(_with_comment(f"{indent}{key}:", comment))
            _emit(value, dotted + ".", depth + 1, comments, lines)
        elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
            lines.append(_with_comment(f"{indent}{key}:", comment))
            lines.extend(f"{indent}{INDENT}- {_flow(item)}" for item in value)
        else:
            lines.append(_with_comment(f"{indent}{key}: {_flow(value)}", comment))


def _with_comment(line: str, comment: str) -> str:
    return f"{line.ljust(COMMENT_COLUMN)} {comment}" if comment else line
