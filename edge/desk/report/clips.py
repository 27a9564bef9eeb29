"""``--clips``: per species, the top-scoring and a few random detection clips from the cards, as a small
spectrogram (JPEG) and a short, downsampled MP3, both inlined as ``data:`` URIs."""

from __future__ import annotations

import base64
import io
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr

from edge.sinks.cardformat import CLIPS_DIR, safe_name
from edge.sinks.governor import CLIP_SUFFIX
from edge.sinks.guano import read_guano

if TYPE_CHECKING:
    import duckdb

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
class ClipFile:
    path: Path
    boot_id: str
    start_sample: int


def card_clips(cards: list[str]) -> list[ClipFile]:
    """Every clip on the collected cards, identified by boot and event start sample from its file name."""
    found = []
    for card in cards:
        for path in sorted(Path(card, CLIPS_DIR).glob(f"*/*{CLIP_SUFFIX}")):
            parts = path.name[: -len(CLIP_SUFFIX)].rsplit("_", 2)
            if len(parts) == 3 and parts[2].isdigit():
                found.append(ClipFile(path, parts[1], int(parts[2])))
    return found


def select_clips(con: duckdb.DuckDBPyConnection, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Per species (label), the clips to show in order: top-scoring first, then random ones, within the budget."""
    cards = [r[0] for r in con.execute("SELECT DISTINCT card FROM card_boots ORDER BY card").fetchall()]
    files = {(c.boot_id, c.start_sample, c.path.parent.name): c for c in card_clips(cards)}
    if not files:
        return {}
    boots = sorted({boot for boot, _, _ in files})
    rows = con.execute("""
        SELECT unit_id, boot_id, start_sample, peak_start_sample, label, score, utc FROM detections
        WHERE list_contains(?::VARCHAR[], boot_id) ORDER BY label, score DESC, utc""", [boots]).fetchall()
    candidates: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        key = (row[1], row[2], safe_name(row[4]))
        if key in files:
            candidates[row[4]].append((*row, files[key].path))
    queues = {label: _order(found, random.Random(f"{seed}:{label}")) for label, found in candidates.items()}
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


def _order(found: list[tuple[Any, ...]], rng: random.Random) -> list[tuple[str, tuple[Any, ...]]]:
    """Top-scoring first, then random others, interleaved so a tight budget still shows both kinds."""
    top = found[:TOP_PER_SPECIES]
    rest = found[TOP_PER_SPECIES:]
    extra = rng.sample(rest, min(RANDOM_PER_SPECIES, len(rest)))
    ordered = [("top", top[0])] if top else []
    ordered += [("random", r) for r in extra[:1]] + [("top", t) for t in top[1:]] + [("random", r) for r in extra[1:]]
    return ordered


def render_clip(row: tuple[Any, ...], kind: str) -> dict[str, Any] | None:
    """One clip as ``{"unit", "utc", "score", "kind", "image", "audio"}`` (data URIs); None if unreadable."""
    unit, _, start_sample, peak_sample, _, score, utc, path = row
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        clip_start = int(read_guano(path).get("BIOL|Clip Start Sample", start_sample))
    except (OSError, RuntimeError, ValueError):
        return None
    begin = max(0, int(peak_sample if peak_sample is not None else start_sample) - clip_start)
    mono = audio[begin:begin + int(CLIP_S * rate)].mean(axis=1)
    if mono.size == 0:
        return None
    mono = soxr.resample(mono, rate, PLAY_RATE).astype(np.float32)
    peak = float(np.abs(mono).max())
    if peak > 0:
        mono *= PEAK_LEVEL / peak
    return {"unit": unit, "utc": utc.isoformat(timespec="seconds") + "Z", "score": round(float(score), 4),
            "kind": kind, "image": _spectrogram_jpeg(mono), "audio": _mp3(mono)}


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
