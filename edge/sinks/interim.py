"""Interim run log (JSON lines) used until the SD-card log lands; same RunLog contract."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.detect import DetectionEvent


class JsonlRunLog:
    """Every record as one JSON line in ``root/run.jsonl``; fsync on flush."""

    def __init__(self, root: Path, sample_rate: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._handle = open(root / "run.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._anchor: tuple[datetime, int] | None = None

    def _utc(self, sample: int | None) -> str | None:
        if sample is None or self._anchor is None:
            return None
        anchor, anchor_sample = self._anchor
        return (anchor + timedelta(seconds=(sample - anchor_sample) / self.sample_rate)).isoformat()

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")

    def open_stream(self, anchor_utc: datetime, anchor_sample: int, clock_sync: str) -> None:
        self._anchor = (anchor_utc, anchor_sample)

    def detections(self, events: Sequence[DetectionEvent]) -> None:
        for e in events:
            self._write({"type": "detection", "utc": self._utc(e.start_sample), **asdict(e)})

    def effort(self, start_sample: int, end_sample: int) -> None:
        self._write({"type": "effort", "start_sample": start_sample, "end_sample": end_sample})

    def event(self, kind: str, sample: int | None = None, **fields: Any) -> None:
        self._write({"type": "event", "kind": kind, "sample": sample, "utc": self._utc(sample), **fields})

    def health(self, fields: dict[str, Any]) -> None:
        self._write({"type": "health", **fields})

    def save_clip(self, event: DetectionEvent, audio: np.ndarray, audio_start_sample: int) -> Path | None:
        return None

    def flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
