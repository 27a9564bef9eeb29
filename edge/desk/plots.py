"""The summary's PNGs (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.desk.database import CollectError

HOURS_PER_DAY = 24
MAX_ANNOTATED_CELLS = 24 * 40
"""Heat-map cells get their count written in them up to this many cells (beyond that it is unreadable)."""
DAILY_BINS_AFTER = timedelta(days=21)
"""Effort is plotted per hour for shorter collections, per day for longer ones."""
DPI = 120


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise CollectError("matplotlib is not installed", "pip install 'biolingual-edge[desk]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_detections_by_hour(counts: list[tuple[str, int, int]], path: Path) -> Path:
    """Heat map: one row per label, one column per UTC hour of day, colour and number = detections."""
    plt = _pyplot()
    labels = sorted({label for label, _, _ in counts})
    grid = np.zeros((max(len(labels), 1), HOURS_PER_DAY), dtype=np.int64)
    row = {label: i for i, label in enumerate(labels)}
    for label, hour, n in counts:
        grid[row[label], hour] = n
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.4 * max(len(labels), 1)), dpi=DPI)
    image = ax.imshow(grid, aspect="auto", cmap="magma_r", interpolation="nearest", vmin=0)
    ax.set_xticks(range(HOURS_PER_DAY))
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("hour of day (UTC)")
    ax.set_title("Detections per label by hour of day" if labels else "No detections collected")
    if grid.size <= MAX_ANNOTATED_CELLS and labels:
        threshold = grid.max() / 2
        for (r, c), n in np.ndenumerate(grid):
            if n:
                ax.text(c, r, str(n), ha="center", va="center", fontsize=7,
                        color="white" if n > threshold else "black")
    fig.colorbar(image, ax=ax, label="detections", pad=0.01)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_effort(rows: list[tuple[str, datetime, float]], path: Path) -> Path:
    """Heat map: one row per unit, time along x, colour = fraction of each hour (or day) actually analysed."""
    plt = _pyplot()
    units = sorted({unit for unit, _, _ in rows})
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.35 * max(len(units), 1)), dpi=DPI)
    if rows:
        start = min(t for _, t, _ in rows).replace(minute=0, second=0, microsecond=0)
        last = max(t for _, t, _ in rows)
        daily = last - start > DAILY_BINS_AFTER
        step = timedelta(days=1) if daily else timedelta(hours=1)
        if daily:
            start = start.replace(hour=0)
        bins = int((last - start) / step) + 1
        grid = np.zeros((len(units), bins))
        row = {unit: i for i, unit in enumerate(units)}
        hours_per_bin = step / timedelta(hours=1)
        for unit, hour, fraction in rows:
            grid[row[unit], int((hour - start) / step)] += min(fraction, 1.0) / hours_per_bin
        edges = [start + i * step for i in range(bins + 1)]
        mesh = ax.pcolormesh(edges, np.arange(len(units) + 1), grid, cmap="Greens", vmin=0, vmax=1)
        ax.set_yticks(np.arange(len(units)) + 0.5, units)
        ax.invert_yaxis()
        fig.colorbar(mesh, ax=ax, label="fraction of time analysed", pad=0.01)
        fig.autofmt_xdate()
        ax.set_title(f"Effort per unit ({'daily' if daily else 'hourly'}, UTC); white = nothing analysed")
    else:
        ax.set_title("No effort collected")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
