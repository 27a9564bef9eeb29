"""Where a running process's resident memory is, by mapping, at its peak: sampled from ``/proc/PID/smaps``.

:class:`PeakSampler` polls a process's ``VmRSS`` and, each time it passes the highest value seen so far,
reads ``/proc/PID/smaps`` and sorts every mapping's resident pages into a category (ONNX Runtime's
library, numpy/OpenBLAS, the interpreter, audio libraries, PulseAudio's shared-memory pools, glibc's heap,
thread stacks, other anonymous memory …). The last such snapshot is the breakdown of the peak (within one
poll interval of it; ``VmHWM`` from ``/proc/PID/status`` is the exact peak to compare with).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

THREAD_STACK_KB = 8192
"""Size of a default pthread stack mapping (``ulimit -s``): ONNX Runtime's pool threads, PortAudio's, ours."""
CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("ONNX Runtime library", r"onnxruntime"),
    ("numpy / OpenBLAS libraries", r"numpy|openblas|gfortran|quadmath"),
    ("audio libraries (PortAudio, ALSA, PulseAudio, sndfile, soxr)",
     r"portaudio|libasound|libpulse|pulsecommon|sndfile|soxr|libFLAC|libvorbis|libogg|libopus|libmp3lame|"
     r"libmpg123|_sounddevice|libsystemd|libdbus|libasyncns|libapparmor"),
    ("PulseAudio shared-memory pools", r"pulse-shm|memfd:pulseaudio"),
    ("interpreter and its modules (python, lib-dynload, site-packages .so)", r"python3|lib-dynload|\.cpython-"),
    ("other shared libraries (libc, libstdc++, libm …)", r"\.so(\.|$)"),
))
"""(category, pattern on the mapping's path): file-backed mappings go to the first that matches."""


@dataclass
class Mapping:
    """One line of ``/proc/PID/smaps`` with the fields we use (kB)."""

    name: str
    size_kb: int
    rss_kb: int = 0
    anonymous_kb: int = 0
    guard_before: bool = False
    """The mapping just below is a no-access guard page (how pthread stacks are laid out)."""


def read_smaps(pid: int) -> list[Mapping]:
    """The process's mappings (empty when it has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    mappings: list[Mapping] = []
    previous_perms = ""
    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            perms = head[1]
            mappings.append(Mapping(head[5] if len(head) > 5 else "", (hi - lo) // 1024,
                                    guard_before=previous_perms.startswith("---")))
            previous_perms = perms
        elif head and head[0] == "Rss:" and mappings:
            mappings[-1].rss_kb = int(head[1])
        elif head and head[0] == "Anonymous:" and mappings:
            mappings[-1].anonymous_kb = int(head[1])
    return mappings


def category(mapping: Mapping) -> str:
    """Which part of the process a mapping belongs to (see :data:`CATEGORIES`)."""
    name = mapping.name
    if name == "[heap]":
        return "glibc main heap ([heap]: Python objects, small allocations)"
    if name == "[stack]":
        return "main thread stack"
    if not name or name.startswith("[anon"):
        if mapping.guard_before and mapping.size_kb in (THREAD_STACK_KB, THREAD_STACK_KB - 4):
            return "thread stacks (8 MB reserved each)"
        return "other anonymous (mmapped allocations: ORT weights and activations, numpy arrays, glibc arenas)"
    if name.startswith("["):
        return "kernel ([vdso], [vvar] …)"
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    if name.endswith((".onnx", ".ort")):
        return "model files (mapped)"
    return "other files"


@dataclass
class Breakdown:
    """Resident kB per category at one moment, plus ``/proc/PID/status``'s totals."""

    at_s: float
    rss_kb: int
    by_category: dict[str, tuple[int, int]] = field(default_factory=dict)
    """category -> (resident kB, of which anonymous kB)."""
    status: dict[str, int] = field(default_factory=dict)
    """VmRSS, RssAnon, RssFile, RssShmem, VmHWM, Threads."""


def snapshot(pid: int, at_s: float) -> Breakdown | None:
    """The process's resident memory by category now (None when it has gone)."""
    status = read_status(pid)
    mappings = read_smaps(pid)
    if not mappings or not status:
        return None
    by: dict[str, tuple[int, int]] = {}
    for mapping in mappings:
        rss, anon = by.get(category(mapping), (0, 0))
        by[category(mapping)] = (rss + mapping.rss_kb, anon + mapping.anonymous_kb)
    return Breakdown(at_s, sum(m.rss_kb for m in mappings), by, status)


def read_status(pid: int) -> dict[str, int]:
    """The memory lines of ``/proc/PID/status`` (kB) and the thread count; empty when it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads")
    return {key: int(value.split()[0]) for key, value in (line.split(":", 1) for line in text.splitlines()
                                                          if ":" in line) if key in wanted}


def python_child(pid: int) -> int:
    """The first child of ``pid`` (the daemon under ``/usr/bin/time``), waiting until it exists."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for _ in range(200):
        try:
            found = children.read_text().split()
        except FileNotFoundError:
            return pid
        if found:
            return int(found[0])
        time.sleep(0.01)
    return pid


class PeakSampler(threading.Thread):
    """Polls a process until it exits; :attr:`peak` is the breakdown at the highest RSS seen."""

    def __init__(self, pid: int, interval_s: float = 0.05, step_kb: int = 256) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval_s, self.step_kb = pid, interval_s, step_kb
        self.peak: Breakdown | None = None
        self.last_hwm_kb = 0
        self.started = time.perf_counter()

    def run(self) -> None:
        while True:
            status = read_status(self.pid)
            if not status or "VmRSS" not in status:
                return
            self.last_hwm_kb = status.get("VmHWM", self.last_hwm_kb)
            if self.peak is None or status["VmRSS"] > self.peak.status.get("VmRSS", 0) + self.step_kb:
                taken = snapshot(self.pid, time.perf_counter() - self.started)
                if taken is not None:
                    self.peak = taken
            time.sleep(self.interval_s)


def markdown(columns: dict[str, Breakdown]) -> str:
    """One table: a row per category, a column per process (MB resident, anonymous part in brackets)."""
    names = list(columns)
    rows = sorted({c for b in columns.values() for c in b.by_category},
                  key=lambda c: -max(b.by_category.get(c, (0, 0))[0] for b in columns.values()))
    lines = ["| resident at the peak, MB (anonymous) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        cells = []
        for name in names:
            rss, anon = columns[name].by_category.get(row, (0, 0))
            cells.append(f"{rss / 1024:.1f}" + (f" ({anon / 1024:.1f})" if anon and anon != rss else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
        lines.append(f"| status {key} | " + " | ".join(f"{columns[n].status.get(key, 0) / 1024:.1f}"
                                                       for n in names) + " |")
    lines.append("| threads | " + " | ".join(str(columns[n].status.get("Threads", 0)) for n in names) + " |")
    lines.append("| peak sampled at, s after start | " + " | ".join(f"{columns[n].at_s:.1f}" for n in names) + " |")
    return "\n".join(lines)
