"""Absolute start times from recorder file names (AudioMoth, Song Meter, BAR-LT …)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

_STAMP = re.compile(r"(?:^|[_-])(\d{8})_(\d{6})(?=$|[_.-])")


def start_time_from_name(path: Path) -> datetime | None:
    """UTC start of a recording named ``[PREFIX_]YYYYMMDD_HHMMSS[...]``, or None.

    AudioMoth writes UTC; other recorders must be set to UTC for this to be right (see README).
    """
    match = _STAMP.search(path.stem)
    if match is None:
        return None
    try:
        stamp = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc)
