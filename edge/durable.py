"""Durable writes, the one copy every stage uses: a power cut leaves the old file or the new one, never a torn or
empty one, and a write that returned is on the disk.

Callers reach these functions through the module (``durable.atomic_write``), so that the power-cut tests can
switch one fsync off for every writer at once and show their campaigns fail without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"
"""Prefix of files being written whole (manifests, clips, bundle files) before their atomic rename."""


def fsync_path(path: Path) -> None:
    """Flush a file or folder (a rename or creation in it) that was written through another handle to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` that survives power loss: every folder it creates is fsync'd into its parent.

    A folder whose parent could not be fsync'd is removed again, so that the next try redoes both.
    """
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    try:
        fsync_path(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a fsync'd temp file, an atomic rename, a fsync of the folder.

    On failure (full or read-only disk) the temp file is removed and the old ``path`` is untouched.
    """
    atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """:func:`atomic_write` of what ``write`` writes into the temp file's handle (seekable), piece by piece:
    a large file is never held whole in memory."""
    temp = path.with_name(TEMP_PREFIX + path.name)
    try:
        with open(temp, "w+b") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_path(path.parent)


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) and fsync it and its folder entry."""
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_path(path.parent)
