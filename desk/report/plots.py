"""The summary's PNGs (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from desk.collect.database import CollectError
from desk.report.effort_strip import (
    CRASHED,
    GAP,
    LISTENED,
    NO_RECORD,
    PARTLY,
    SCHEDULED_OFF,
    STATE_COLOURS,
    STATE_NAMES,
)
from desk.report.season import HOURS_PER_DAY, Season, hour_of_day, per_analysed_hour

MAX_ANNOTATED_CELLS = 24 * 12
"""Heat-map cells get their count written in them up to this many cells (beyond that it is unreadable)."""
DAILY_BINS_AFTER = timedelta(days=21)
"""Effort is plotted per hour for shorter collections, per day for longer ones."""
FULL_BIN = 0.999
"""A bin counts as fully listened from this fraction on (else "partly")."""
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


def plot_effort(season: Season, states: np.ndarray, path: Path) -> Path:
    """One row per unit, time along x (UTC): listened / partly / scheduled off / gap / down after a crash."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    units = len(season.units)
    fig, ax = plt.subplots(figsize=(12, 1.9 + 0.35 * max(units, 1)), dpi=DPI)
    minutes = states.shape[1]
    daily = minutes > DAILY_BINS_AFTER / timedelta(minutes=1)
    per_bin = 24 * 60 if daily else 60
    bins = states[:, : minutes // per_bin * per_bin].reshape(units, -1, per_bin)
    listened = (bins == LISTENED).mean(axis=2)
    others = np.stack([(bins == code).sum(axis=2) for code in (NO_RECORD, SCHEDULED_OFF, GAP, CRASHED)], axis=2)
    codes = np.array([NO_RECORD, SCHEDULED_OFF, GAP, CRASHED])[others.argmax(axis=2)]
    codes = np.where(listened >= FULL_BIN, LISTENED, np.where(listened > 0, PARTLY, codes))
    rgb = np.array([_rgb(STATE_COLOURS[c]) for c in range(len(STATE_NAMES))])[codes]
    ax.imshow(rgb, aspect="auto", interpolation="nearest",
              extent=(0, rgb.shape[1], units, 0) if units else None)
    ticks = [int(t) for t in np.linspace(0, rgb.shape[1], 8)] if units else []
    form = "%Y-%m-%d" if len(season.seasons) > 1 else "%m-%d" if daily else "%m-%d %Hh"
    ax.set_xticks(ticks, [f"{season.utc_at_minute(t * per_bin):{form}}" for t in ticks])
    for first, _ in season.seasons[1:]:  # the days between seasons are skipped: mark where the axis jumps
        ax.axvline(season.minute_index(first.replace(tzinfo=None)) / per_bin, color="black", linestyle="--")
    ax.set_yticks(np.arange(units) + 0.5, season.units)
    ax.set_xlabel("UTC date")
    ax.set_title(f"Effort per unit ({'daily' if daily else 'hourly'} bins): what each unit was doing")
    ax.legend(handles=[Patch(color=STATE_COLOURS[c], label=STATE_NAMES[c]) for c in range(1, len(STATE_NAMES))],
              loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(STATE_NAMES) - 1, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _rgb(colour: str) -> tuple[float, float, float]:
    return (int(colour[1:3], 16) / 255, int(colour[3:5], 16) / 255, int(colour[5:7], 16) / 255)
