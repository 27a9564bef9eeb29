"""``--clips``: per species, the top-scoring and a few random detections' audio, as a small spectrogram (JPEG)
and a short, downsampled MP3, both inlined as ``data:`` URIs.

The audio comes from the clips on the cards (``clips/<label>/*.wav``, matched to detections by unit, boot, start
sample and the label in the clip's GUANO, as collected) or, for detections without one, from the recording the
season archive traces the detection's best window to (``source_path`` / ``source_offset``, offline analysis),
asked through the archive's :class:`~desk.archive.windows.WindowStore` door (``locate``, then ``windows``)."""

from __future__ import annotations

import base64
import io
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr

from edge.card.guano import read_guano

if TYPE_CHECKING:
    import duckdb

    from desk.archive.windows import WindowStore

TOP_PER_SPECIES = 3
RANDOM_PER_SPECIES = 2
CLIP_BUDGET_BYTES = 5 * 1024 * 1024
"""All clips together stay under this; past it, species keep their best clips first (round robin)."""
PLAY_RATE = 16_000
"""Clips are downsampled to this rate (8 kHz bandwidth: most bird, frog and insect song) for size."""
CLIP_S = 5.0
"""Seconds of audio kept per clip, from the start of the detection's best window."""
SPECTROGRAM_FFT = 256
SPECTROGRAM_HOP = 256
DYNAMIC_RANGE_DB = 70.0
JPEG_QUALITY = 60
MP3_COMPRESSION = 0.8
"""libsndfile's 0 (best) .. 1 (smallest) MP3 quality: about 24 kbit/s at 16 kHz mono, fine for listening."""
PEAK_LEVEL = 0.9
"""Clips are peak-normalised to this level so quiet calls are audible (the caption says so)."""


@dataclass(frozen=True)
class ClipSource:
    """Where one detection's audio is: a clip on a card, or the recording the archive says it came from."""

    unit: str
    label: str
    score: float
    utc: datetime
    path: Path
    offset_s: float | None
    """Seconds into ``path`` where the detection's best window starts; None: read it from the clip's GUANO."""
    peak_sample: int


def select_clips(con: duckdb.DuckDBPyConnection, store: WindowStore | None = None,
                 seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Per species (label), the clips to show in order: top-scoring first, then random ones, within the budget
    (``store``: the season archive, for detections without a card clip)."""
    candidates: dict[str, list[ClipSource]] = defaultdict(list)
    seen: set[tuple[str, str, int, str]] = set()
    archived = _recording_sources(con, store) if store is not None else []
    for key, source in [*_card_sources(con), *archived]:
        if key not in seen:
            seen.add(key)
            candidates[source.label].append(source)
    queues = {label: _order(sorted(found, key=lambda c: (-c.score, c.utc)), random.Random(f"{seed}:{label}"))
              for label, found in candidates.items()}
    chosen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    spent = 0
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # the MP3 encoder and FFTs release the GIL
        for rank in range(TOP_PER_SPECIES + RANDOM_PER_SPECIES):
            due = [(label, queue[rank]) for label, queue in sorted(queues.items()) if rank < len(queue)]
            for (label, _), clip in zip(due, pool.map(lambda item: render_clip(item[1][1], item[1][0]), due)):
                if clip is not None and spent < CLIP_BUDGET_BYTES:
                    spent += len(clip["audio"]) + len(clip["image"])
                    chosen[label].append(clip)
            if spent >= CLIP_BUDGET_BYTES:
                break
    return dict(chosen)


SourceKey = tuple[str, str, int, str]
"""(unit, boot, detection start sample, label): one detection."""


def _card_sources(con: duckdb.DuckDBPyConnection) -> list[tuple[SourceKey, ClipSource]]:
    """Detections with a clip on a card, matched by the label the clip's own GUANO names (collect's ``clips``
    table), never by its folder: a folder name is only a sanitised label (older cards let labels share one)."""
    rows = con.execute("""
        SELECT d.unit_id, d.boot_id, d.start_sample, d.peak_start_sample, d.label, d.score, d.utc, c.path
        FROM detections d JOIN clips c ON c.unit_id = d.unit_id AND c.boot_id = d.boot_id AND c.label = d.label
             AND c.event_start_sample = d.start_sample
        ORDER BY c.path""").fetchall()
    return [((unit, boot, start, label),
             ClipSource(unit, label, score, utc, Path(path), None, start if peak is None else peak))
            for unit, boot, start, peak, label, score, utc, path in rows if Path(path).is_file()]


def _recording_sources(con: duckdb.DuckDBPyConnection, store: WindowStore) -> list[tuple[SourceKey, ClipSource]]:
    """Detections whose best window the season archive traces to a recording on disk (``analyze --embeddings``:
    the window's ``source_path`` and ``source_offset``)."""
    detected = con.execute("""SELECT unit_id, boot_id, stream, start_sample, coalesce(peak_start_sample, start_sample)
                              AS best, label, score, utc FROM detections
                              WHERE stream IS NOT NULL AND start_sample IS NOT NULL""").fetchall()
    if not detected:
        return []
    units, boots, streams, starts, best, labels, scores, utcs = (list(c) for c in zip(*detected))
    ids = store.locate(units, boots, np.asarray(streams, np.int64), np.asarray(best, np.int64))
    found = np.flatnonzero(ids > 0)
    if not len(found):
        return []
    table = store.windows(ids[found], ("source_path", "source_offset", "sample_rate", "start_sample"))
    sources = []
    for i, path, offset, rate, peak in zip(found.tolist(), *(table[c].to_pylist() for c in table.column_names)):
        if path is not None and offset is not None and rate and Path(path).is_file():
            sources.append(((units[i], boots[i], starts[i], labels[i]),
                            ClipSource(units[i], labels[i], scores[i], utcs[i], Path(path), offset / rate, peak)))
    return sources


def _order(found: list[ClipSource], rng: random.Random) -> list[tuple[str, ClipSource]]:
    """Top-scoring first, then random others, interleaved so a tight budget still shows both kinds."""
    top = found[:TOP_PER_SPECIES]
    rest = found[TOP_PER_SPECIES:]
    extra = rng.sample(rest, min(RANDOM_PER_SPECIES, len(rest)))
    ordered = [("top", top[0])] if top else []
    ordered += [("random", r) for r in extra[:1]] + [("top", t) for t in top[1:]] + [("random", r) for r in extra[1:]]
    return ordered


def render_clip(source: ClipSource, kind: str) -> dict[str, Any] | None:
    """One clip as ``{"unit", "utc", "score", "kind", "source", "file", "image", "audio"}`` (``file``: the clip's or
    recording's file name; image and audio as data URIs); None if unreadable."""
    try:
        info = sf.info(str(source.path))
        if source.offset_s is None:
            clip_start = int(read_guano(source.path).get("BIOL|Clip Start Sample", source.peak_sample))
            begin = max(0, source.peak_sample - clip_start)
        else:
            begin = max(0, round(source.offset_s * info.samplerate))
        audio, rate = sf.read(source.path, start=begin, frames=int(CLIP_S * info.samplerate), dtype="float32",
                              always_2d=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if audio.shape[0] == 0:
        return None
    mono = soxr.resample(audio.mean(axis=1), rate, PLAY_RATE).astype(np.float32)
    peak = float(np.abs(mono).max())
    if peak > 0:
        mono *= PEAK_LEVEL / peak
    return {"unit": source.unit, "utc": source.utc.isoformat(timespec="seconds") + "Z",
            "score": round(float(source.score), 4), "kind": kind, "source": "card clip" if source.offset_s is None
            else "recording", "file": source.path.name, "image": _spectrogram_jpeg(mono), "audio": _mp3(mono)}


def _spectrogram_jpeg(audio: np.ndarray) -> str:
    from matplotlib import image

    frames = max(1, 1 + (audio.size - SPECTROGRAM_FFT) // SPECTROGRAM_HOP)
    padded = np.pad(audio, (0, max(0, SPECTROGRAM_FFT - audio.size)))
    index = np.arange(SPECTROGRAM_FFT)[None, :] + SPECTROGRAM_HOP * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[index] * np.hanning(SPECTROGRAM_FFT), axis=1)) ** 2
    db = 10 * np.log10(power.T + 1e-12)
    db = np.clip(db - db.max() + DYNAMIC_RANGE_DB, 0, DYNAMIC_RANGE_DB)[::-1]
    buffer = io.BytesIO()
    image.imsave(buffer, db, cmap="magma", vmin=0, vmax=DYNAMIC_RANGE_DB, format="jpeg",
                 pil_kwargs={"quality": JPEG_QUALITY})
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _mp3(audio: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, audio, PLAY_RATE, format="MP3", compression_level=MP3_COMPRESSION)
    return "data:audio/mpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
