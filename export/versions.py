"""Tool versions recorded in the manifest."""

from __future__ import annotations

import platform
from importlib import metadata

TOOLS = ("biolingual-edge", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "numpy", "soxr")


def tool_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the exported files (missing ones omitted)."""
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
