"""What the scale benchmarks share: their common options, and every phase run in a process of its own.

A phase child ends by printing one JSON line (:func:`report_phase`); the parent starts it with :func:`run_phase`,
which times it from outside (wall seconds, CPU seconds of the child) and samples its resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_S = 0.05
"""How often a phase's resident memory is sampled."""


def scale_parser(doc: str | None, workdir: Path) -> argparse.ArgumentParser:
    """A parser with the options of every scale benchmark: ``--windows``, ``--units``, ``--labels``, ``--workdir``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=workdir)
    return parser


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_phase(result: dict[str, Any]) -> None:
    """A phase child's last line: its ``result`` and its peak RSS, as JSON."""
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))


def resident_mb(pid: int) -> dict[str, float]:
    """``RssAnon`` and ``RssFile`` of process ``pid`` in MB (empty once it is gone)."""
    found: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    found[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError):
        return {}
    return found


@dataclass
class PhaseRun:
    """One phase child, measured from outside."""

    wall_s: float
    cpu_s: float
    """User + system seconds of the child."""
    result: dict[str, Any]
    """The JSON of its last line."""
    peak_rss_anon_mb: float
    peak_rss_file_mb: float


def run_phase(command: list[str], what: str, cwd: Path, env: dict[str, str] | None = None) -> PhaseRun:
    """Run a phase child; ``SystemExit`` naming ``what`` with the end of its stderr if it fails."""
    peak = {"RssAnon": 0.0, "RssFile": 0.0}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          env=env) as child:
        while True:  # the two peaks come from separate samples: their sum may exceed the peak RSS
            for key, value in resident_mb(child.pid).items():
                peak[key] = max(peak[key], value)
            try:
                stdout, stderr = child.communicate(timeout=SAMPLE_S)
                break
            except subprocess.TimeoutExpired:
                continue
    wall = time.perf_counter() - started
    if child.returncode:
        raise SystemExit(f"{what} failed:\n{stderr[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return PhaseRun(wall, cpu, json.loads(stdout.strip().splitlines()[-1]), peak["RssAnon"], peak["RssFile"])
