"""Print ``name==floor`` for every core dependency of pyproject.toml (the oldest versions we claim to support).

CI installs exactly these into a clean venv and runs the torch-free tests, so a declared range cannot drift
from what the code needs (e.g. a numpy-2-only call under ``numpy>=1.24``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path) -> list[str]:
    """``name==version`` pins from the ``>=`` lower bounds of ``[project] dependencies``."""
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = []
    for dep in deps:
        match = FLOOR.match(dep)
        if match is None:
            raise SystemExit(f"core dependency {dep!r} has no >= lower bound; declare one")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
