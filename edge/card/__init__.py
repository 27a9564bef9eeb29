"""Where detections go: analysis tables, the SD-card log, health records, clips."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.stream.detector import DetectionEvent


class RunLog(Protocol):
    """What the daemon writes to the card. Samples are model-rate indices on the run's timeline."""

    def open_stream(self, anchor_utc: datetime, anchor_sample: int, clock_sync: str) -> None: ...

    def detections(self, events: Sequence[DetectionEvent]) -> None: ...

    def effort(self, start_sample: int, end_sample: int) -> None: ...

    def embeddings(self, starts: Sequence[int], ends: Sequence[int], vectors: np.ndarray) -> None: ...

    def event(self, kind: str, sample: int | None = None, **fields: Any) -> None: ...

    def health(self, fields: dict[str, Any]) -> None: ...

    def save_clip(self, event: DetectionEvent, audio: np.ndarray | Sequence[np.ndarray], audio_start_sample: int,
                  cut_samples: int = 0) -> Path | None: ...

    def flush(self) -> None: ...

    def settle(self, budget_s: float) -> dict[str, int]:
        """At stop: write everything (retrying for ``budget_s``); returns rows per kind not on the card."""

    def fallback_file(self) -> Path | None:
        """Where rows that did not reach the card are kept."""

    def last_write_error(self) -> OSError | None:
        """The last error a card write gave in this run (None: none failed)."""

    def rows_lost(self) -> int:
        """Rows neither on the card nor in the fallback file (after :meth:`close`)."""

    def close(self) -> None: ...
