"""Building blocks shared by the unit-config models: a strict base model and multi-problem errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

LoosePath = Annotated[Path, Field(strict=False)]
"""A path field that accepts the plain strings YAML gives (every other field is strict)."""


class StrictModel(BaseModel):
    """Unknown keys are errors, values are not coerced across types (YAML ``"10"`` is not the number 10)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FieldProblems(ValueError):
    """Raised by a model validator to report several problems, each under a field of that model.

    ``problems`` holds ``(field path relative to the model, message)``; the config loader prefixes the
    model's own dotted path, so ``("hop_s", "must be <= window_s (10)")`` in ``analysis`` reads
    ``analysis.hop_s: must be <= window_s (10)``.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems


def raise_problems(problems: list[tuple[str, str]]) -> None:
    """Raise :class:`FieldProblems` when ``problems`` is not empty."""
    if problems:
        raise FieldProblems(problems)


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """A relative path is taken relative to the config file's folder (``context["base_dir"]``), or with
    ``context["relative_to_cwd"]`` to the working folder (looked up only then: a command whose paths are all
    absolute runs from any folder, even one deleted under it)."""
    context = info.context or {}
    base = context.get("base_dir")
    if value.is_absolute() or (base is None and not context.get("relative_to_cwd")):
        return value
    if base is not None:
        return (Path(base) / value).resolve()
    try:
        return value.resolve()
    except FileNotFoundError:
        raise ValueError(f"'{value}' is relative to the working folder, which no longer exists: cd into a folder "
                         "or give an absolute path") from None
