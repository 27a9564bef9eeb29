"""The summary's PNGs (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.desk.database import CollectError
from edge.desk.report.season import HOURS_PER_DAY, Season, hour_of_day, per_analysed_hour

MAX_ANNOTATED_CELLS = 24 * 12
"""Heat-map cells get their count written in them up to this many cells (beyond that it is unreadable)."""
DAILY_BINS_AFTER = timedelta(days=21)
"""Effort is plotted per hour for shorter collections, per day for longer ones."""
DPI = 120
NOT_LISTENED_COLOUR = "#cfcfcf"
PANEL_COLUMNS = 4
PANEL_WIDTH_IN = 4.5
PANEL_BASE_IN = 1.3
PANEL_ROW_IN = 0.16
"""Height per label row of each unit's panel, in inches."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise CollectError("matplotlib is not installed", "pip install 'biolingual-edge[desk]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_detections_by_hour(season: Season, path: Path) -> Path:
    """One panel per unit: label x local hour of day, colour = detections per analysed hour; grey = not listened."""
    plt = _pyplot()
    columns = min(max(len(season.units), 1), PANEL_COLUMNS)
    rows = -(-max(len(season.units), 1) // columns)
    panel_h = PANEL_BASE_IN + PANEL_ROW_IN * max(len(season.species), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_WIDTH_IN * columns + 2, rows * panel_h), dpi=DPI,
                             squeeze=False, sharey=True)
    cmap = plt.get_cmap("magma_r").with_extremes(bad=NOT_LISTENED_COLOUR)
    for index, ax in enumerate(axes.flat):
        if index >= len(season.units):
            ax.set_visible(bool(index == 0))
            ax.set_title("No units collected" if index == 0 else "")
            continue
        rates = per_analysed_hour(*hour_of_day(season, index))
        grid = np.ma.masked_invalid(rates if season.species else np.full((1, HOURS_PER_DAY), np.nan))
        image = ax.imshow(grid, aspect="auto", cmap=cmap, interpolation="nearest", vmin=0)
        ax.set_xticks(range(0, HOURS_PER_DAY, 3))
        ax.set_yticks(range(len(season.species)), season.species)
        zone = season.zones[index] + ("" if season.zone_from_config[index] else ", not in its config")
        ax.set_xlabel(f"hour of day ({zone})")
        ax.set_title(f"{season.units[index]}: per analysed hour", fontsize=9)
        if grid.size <= MAX_ANNOTATED_CELLS and season.species:
            _annotate(ax, grid)
        fig.colorbar(image, ax=ax, pad=0.01)
    fig.suptitle("Detections per analysed hour by local hour of day (grey = not listened)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _annotate(ax: Any, grid: np.ma.MaskedArray) -> None:
    threshold = float(grid.max() or 0) / 2
    for (r, c), rate in np.ndenumerate(grid.filled(np.nan)):
        if rate > 0:
            ax.text(c, r, f"{rate:.2g}", ha="center", va="center", fontsize=6,
                    color="white" if rate > threshold else "black")


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
