"""Loading a unit config: YAML file or packaged profile, CLI overrides, one validation, every problem reported.

Precedence is CLI > file > defaults. :func:`resolve_config` reads a YAML file (or a profile shipped in
``firmware_configs`` by name), applies dotted-key overrides such as ``{"analysis.hop_s": 2.5}`` and validates
the result once; a bad config raises one :class:`~edge.errors.ConfigError` listing every problem with its
dotted path (``analysis.hop_s: must be <= window_s (10) …``). Relative paths in a file are relative to the
file's folder; relative paths given as overrides are relative to the working directory.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edge.config.base import FieldProblems
from edge.config.schema import UnitConfig
from edge.errors import ConfigError

PROFILE_PACKAGE = "firmware_configs"
PROFILE_SUFFIX = ".yaml"
PATH_KEYS = ("model.bundle", "analysis.labels", "storage.log_dir", "uplink.credentials_file", "uplink.ca_file",
             "uplink.client_cert", "uplink.client_key")
"""Keys holding paths: relative values resolve against the config file's folder (or the cwd for flags)."""
SHOW_HINT = "fix the keys listed; `biolingual-edge config show --profile jetson-orin-nano` prints a valid example"

__all__ = ["UnitConfig", "resolve_config", "profile_names", "profile_path", "parse_override"]


def profile_names() -> list[str]:
    """Names of the hardware profiles shipped in the package (``firmware_configs/NAME.yaml``)."""
    folder = resources.files(PROFILE_PACKAGE)
    return sorted(entry.name[: -len(PROFILE_SUFFIX)] for entry in folder.iterdir()
                  if entry.name.endswith(PROFILE_SUFFIX))


def profile_path(name: str) -> Path:
    """The installed file of profile ``name``, or a :class:`ConfigError` suggesting the closest names."""
    names = profile_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"no unit profile named '{name}'", f"{guess}profiles: {', '.join(names)}")
    return Path(str(resources.files(PROFILE_PACKAGE).joinpath(name + PROFILE_SUFFIX)))


def load_yaml(path: Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; a missing file, bad syntax or a non-mapping is a :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist", "pass --config FILE or --profile PROFILE") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}", "check the path and that it is UTF-8") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}",
                          "check indentation (spaces, not tabs) and quoting") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold sections (key: value), not a {type(data).__name__}",
                          "start from a profile in firmware_configs/")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``"analysis.hop_s=2.5"`` -> ``("analysis.hop_s", 2.5)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{text}' is not KEY=VALUE", "write e.g. --set analysis.hop_s=2.5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value '{raw}' is not valid YAML", "quote strings with spaces") from e
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], cwd: Path | None) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key set; relative override paths become absolute against ``cwd``
    (default: the working folder, looked up only when a relative path needs it).

    A ``None`` value means "flag not given" and leaves the key alone.
    """
    merged = copy.deepcopy(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted}: {'.'.join(parts[:depth + 1])} is not a section",
                                  "check the key name with `biolingual-edge config show`")
            node = child
        if dotted in PATH_KEYS and isinstance(value, str | Path) and not Path(value).is_absolute():
            try:
                value = str(((cwd or Path.cwd()) / value).resolve())
            except FileNotFoundError:
                raise ConfigError(f"{dotted}={value}: a relative path, and the working folder no longer exists",
                                  "cd into a folder, or give an absolute path") from None
        node[parts[-1]] = value
    return merged


def resolve_config(path: Path | None, unit: str | None, overrides: Mapping[str, Any] | None = None,
                   cwd: Path | None = None) -> UnitConfig:
    """Config from a file or a packaged profile (or neither: defaults), with dotted-key overrides on top."""
    if path is not None and unit is not None:
        raise ConfigError("pass either --config FILE or --profile PROFILE, not both",
                          "copy the profile, edit it, and pass it with --config")
    source = path if path is not None else profile_path(unit) if unit is not None else None
    data = load_yaml(source) if source is not None else {}
    data = apply_overrides(data, overrides or {}, cwd)
    base_dir = source.resolve().parent if source is not None else cwd  # None: the working folder, when needed
    try:
        return UnitConfig.model_validate(data, context={"base_dir": base_dir, "relative_to_cwd": base_dir is None})
    except ValidationError as e:
        raise config_problems(validation_problems(e), source, unit, overrides or {}) from None


def config_problems(problems: list[tuple[str, str]], source: Path | None, unit: str | None,
                    overrides: Mapping[str, Any]) -> ConfigError:
    """One error listing every problem, each blamed on where its value came from: the command line or the file."""
    given = {key: value for key, value in overrides.items() if value is not None}
    lines, from_file = [], 0
    for key, message in problems:
        setter = next((k for k in given if key == k or key.startswith((k + ".", k + "["))), None)
        if setter is None:
            from_file += 1
            lines.append(f"{key}: {message}")
        else:
            lines.append(f"{key}: {message} (set on the command line: {setter}={given[setter]})")
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    if not from_file:
        name, hint = "the settings given on the command line", "fix the values given with --set or the flags listed"
    elif unit is not None and source is not None:
        name = f"profile {unit} ({source})" + (" with the command line's settings" if from_file < len(lines) else "")
        hint = (f"save the profile as your own file (`biolingual-edge config show --profile {unit} > unit.yaml`), "
                "fix the keys listed there and pass --config unit.yaml")
    else:
        name = str(source) if source is not None else "the settings"
        hint = SHOW_HINT
    verb = "have" if not from_file else "has"
    return ConfigError(f"{name} {verb} {count}:\n  " + "\n  ".join(lines), hint)


def dotted(loc: tuple[int | str, ...]) -> str:
    """``("schedule", "periods", 0, "start")`` -> ``schedule.periods[0].start`` (empty parts skipped)."""
    text = ""
    for part in loc:
        if part == "":
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validation_problems(error: ValidationError) -> list[tuple[str, str]]:
    """One ``(dotted path, message)`` per problem, with "did you mean" for unknown keys."""
    lines: list[tuple[str, str]] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        kind = item["type"]
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblems):
            for sub, message in cause.problems:
                sub_loc = tuple(int(p) if p.isdigit() else p for p in sub.split("."))
                lines.append((dotted(loc + sub_loc), message))
        elif kind == "extra_forbidden":
            lines.append((dotted(loc), f"unknown key{_did_you_mean(loc)}"))
        elif kind == "missing":
            section = _model_at(loc)
            required = [name for name, field in section.model_fields.items() if field.is_required()] if section else []
            lines.extend((dotted(loc + (name,)), "required, not set") for name in required or [""])
        else:
            message = item["msg"].removeprefix("Value error, ")
            if kind.endswith(("_type", "_parsing")) and "input" in item:
                message += f" (got {item['input']!r})"
            lines.append((dotted(loc) or "config", message))
    return lines


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (list indices and dict keys skipped)."""
    current: Any = UnitConfig
    for part in loc:
        if isinstance(part, str) and _is_model(current) and part in current.model_fields:
            current = _inner_model(current.model_fields[part].annotation)
        elif not isinstance(part, int):
            return None
    return current if _is_model(current) else None


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _inner_model(annotation: Any) -> Any:
    """The model inside ``Model``, ``Model | None``, ``list[Model]`` or ``Annotated[...]``."""
    if _is_model(annotation):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in args:
            found = _inner_model(arg)
            if found is not None:
                return found
    return None
