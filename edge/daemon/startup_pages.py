"""Unmap the clean file pages the daemon touched only while starting: library code that ran once, read-only data.

Resident size counts every page of a shared library the process has mapped, including code that ran once: import-time
initialisation, ONNX Runtime's graph optimisers and kernel registry, PortAudio's device scan and the audio stack it
loads. On the Raspberry Pi 4 profile that is ≈ 45 MB of file pages at the peak, of which the analysis loop touches
≈ 20 MB. ``MADV_DONTNEED`` on a private mapping that is read-only and holds no private (copied-on-write) page drops
only this process's page-table entries for it: the pages stay in the page cache, a later access maps them again from
there (a minor fault, or a read from the card if the kernel has reclaimed them meanwhile), and the kernel can reclaim
the ones no process maps without touching the daemon. Writable mappings, shared ones, devices, and any mapping with a
private page (relocated data made read-only, patched code) are never touched, so only clean file content is unmapped.
BENCHMARKS.md, *The Pi profiles under 200 MB*.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SMAPS = Path("/proc/self/smaps")
HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
"""A mapping's first line in ``smaps``: start-end perms offset device inode [path]."""


@dataclass
class FileMapping:
    """One file-backed mapping of this process and the fields of ``smaps`` that decide whether it is clean."""

    start: int
    end: int
    perms: str
    path: str
    rss_kb: int = 0
    anonymous_kb: int = -1
    """Private (copied-on-write) pages in the mapping; -1 until read (then never treated as clean)."""

    @property
    def clean(self) -> bool:
        """Read-only, private, a regular file, resident pages and none of them private to this process."""
        regular = self.path.startswith("/") and not self.path.startswith(("/dev/", "/memfd:", "/SYSV"))
        return (regular and "w" not in self.perms and self.perms.endswith("p") and self.anonymous_kb == 0
                and self.rss_kb > 0)


def file_mappings(smaps: str) -> list[FileMapping]:
    """Every mapping that names a path, with its resident and private kB, from ``/proc/PID/smaps`` text."""
    found: list[FileMapping] = []
    current: FileMapping | None = None
    for line in smaps.splitlines():
        header = HEADER.match(line)
        if header:
            start, end, perms, path = header.groups()
            current = FileMapping(int(start, 16), int(end, 16), perms, path) if path else None
            if current is not None:
                found.append(current)
        elif current is not None and line.startswith(("Rss:", "Anonymous:")):
            key, value = line.split()[:2]
            if key == "Rss:":
                current.rss_kb = int(value)
            else:
                current.anonymous_kb = int(value)
    return found


def drop_clean_file_pages() -> int:
    """Unmap the resident pages of this process's clean file mappings (see the module text); the kB unmapped.

    0 where there is nothing to read or call (not Linux, no ``/proc``, no ``madvise``): a unit then keeps them.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    try:
        mappings = file_mappings(SMAPS.read_text())
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    if advice is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    dropped = 0
    for mapping in mappings:
        if mapping.clean and madvise(mapping.start, mapping.end - mapping.start, advice) == 0:
            dropped += mapping.rss_kb
    log.info("unmapped %.1f MB of clean start-up file pages", dropped / 1024)
    return dropped
