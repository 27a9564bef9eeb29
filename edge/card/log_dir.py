"""Is the log folder (the SD card) there and writable? Checked by ``check`` and before the daemon starts.

A card that did not mount leaves its folder missing (or an empty mount point on the system disk);
measuring free space on the nearest existing parent would pass it, and the daemon would fill the OS disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge import durable
from edge.errors import ConfigError


def log_dir_problem(log_dir: Path) -> str | None:
    """Why ``log_dir`` cannot take the log (missing, not a folder, read-only), or None when it can."""
    if not log_dir.exists():
        return f"log folder {log_dir} does not exist (is the SD card mounted?)"
    if not log_dir.is_dir():
        return f"log folder {log_dir} is a file, not a folder"
    read_only_mount = bool(os.statvfs(log_dir).f_flag & os.ST_RDONLY)
    if read_only_mount or not os.access(log_dir, os.W_OK | os.X_OK):
        why = "is on a read-only file system (card locked or mounted read-only?)" if read_only_mount else \
            "is not writable by this user"
        return f"log folder {log_dir} {why}"
    return None


def require_log_dir(log_dir: Path, create: bool) -> None:
    """Raise :class:`ConfigError` unless ``log_dir`` is usable; ``create`` makes a missing one first."""
    if create and not log_dir.exists():
        try:
            durable.make_dirs(log_dir)  # fsync'd into its parent: a power cut must not take the card folder
        except OSError as e:
            raise ConfigError(f"cannot create log folder {log_dir}: {e.strerror}",
                              "pass --log-dir with a writable folder") from e
    problem = log_dir_problem(log_dir)
    if problem is not None:
        raise ConfigError(problem, f"mount the card, or create the folder (`mkdir -p {log_dir}`) and make it "
                                   "writable by the recorder's user; `biolingual-edge check` tests it")
