"""Audio clips of detections: FLAC or WAV with GUANO metadata, written atomically under ``clips/<label>/``
(one folder per label, never shared: :func:`edge.card.cardformat.unique_name`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edge import durable
from edge.card.cardformat import compact_utc, format_utc, safe_name, unique_name
from edge.card.guano import write_flac_with_guano, write_wav_with_guano
from edge.stream.detector import DetectionEvent

GUANO_MAKE = "biolingual-edge"
NAMESPACE = "BIOL"
"""GUANO namespace for our own fields."""


@dataclass(frozen=True)
class ClipContext:
    """Where and when a clip was recorded, for its name and GUANO fields."""

    unit_id: str
    deployment_id: str
    boot_id: str
    clock_sync: str
    sample_rate: int
    settings_hash: str
    clip_format: str = "flac"
    """``flac`` or ``wav``."""


def clip_path(clips_root: Path, context: ClipContext, event: DetectionEvent, start: datetime) -> Path:
    """``clips/<label>/<utc>_<unit>_<label>_<boot>_<sample>.flac``: sortable by time, unique per label, boot and
    sample (``<label>``: :func:`~edge.card.cardformat.unique_name`, so no two labels share a folder)."""
    label = unique_name(event.label)
    name = (f"{compact_utc(start)}_{safe_name(context.unit_id)}_{label}_{context.boot_id}_"
            f"{event.start_sample}.{context.clip_format}")
    return clips_root / label / name


def guano_fields(context: ClipContext, event: DetectionEvent, start: datetime, audio_start_sample: int,
                 samples: int, cut_samples: int = 0) -> dict[str, str]:
    cut = {f"{NAMESPACE}|Cut Start S": f"{cut_samples / context.sample_rate:.3f}"} if cut_samples else {}
    return {
        "Timestamp": format_utc(start),
        "Length": f"{samples / context.sample_rate:.3f}",
        "Samplerate": str(context.sample_rate),
        "Make": GUANO_MAKE,
        "Serial": context.unit_id,
        "Species Auto ID": event.label,
        f"{NAMESPACE}|Deployment": context.deployment_id,
        f"{NAMESPACE}|Boot": context.boot_id,
        f"{NAMESPACE}|Clock Sync": context.clock_sync,
        f"{NAMESPACE}|Score": f"{event.peak_score:.6g}",
        f"{NAMESPACE}|Cosine": f"{event.peak_cosine:.6g}",
        f"{NAMESPACE}|Clip Start Sample": str(audio_start_sample),
        f"{NAMESPACE}|Event Start Sample": str(event.start_sample),
        f"{NAMESPACE}|Event End Sample": str(event.end_sample),
        f"{NAMESPACE}|Windows": str(event.windows),
        f"{NAMESPACE}|Settings Hash": context.settings_hash,
        **cut,
    }


def write_clip(clips_root: Path, context: ClipContext, event: DetectionEvent, audio: np.ndarray | Sequence[np.ndarray],
               audio_start_sample: int, start: datetime, cut_samples: int = 0) -> Path:
    """Write the clip (``audio``: (N,) int16 PCM or float32 at ``context.sample_rate``, or such pieces in order,
    encoded one by one into the temp file: no copy of the whole clip in memory); raises ``OSError`` leaving no file.

    ``cut_samples`` > 0: the clip starts that much after the requested start (event longer than memory held).
    """
    pieces = [audio] if isinstance(audio, np.ndarray) else list(audio)
    path = clip_path(clips_root, context, event, start)
    durable.make_dirs(path.parent)
    encode = write_flac_with_guano if context.clip_format == "flac" else write_wav_with_guano
    fields = guano_fields(context, event, start, audio_start_sample, sum(len(p) for p in pieces), cut_samples)
    durable.atomic_write_with(path, lambda handle: encode(handle, pieces, context.sample_rate, fields))
    return path


def remove_stale_temp_files(pattern_root: Path, pattern: str) -> int:
    """Delete temp files left by a power cut mid-write (never renamed, so never complete); returns how many."""
    removed = 0
    for temp in pattern_root.glob(pattern):
        with contextlib.suppress(OSError):
            os.unlink(temp)
            removed += 1
    return removed
