"""Label sets the tiny model can tell apart: its embeddings of any two sounds barely differ (cosine > 0.9), so
labels are defined on pure tones, each label's embedding orthogonal to every tone's but its own (the dual basis
of the tones' embeddings). A recording of those tones one after the other then makes each label fire exactly
where its tones play."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from edge.model.bundle import open_bundle
from edge.model.examples import embed_recordings
from edge.scoring.label_sets import normalise, store_label_set
from edge.scoring.labels import LabelList

TONES_HZ = (300, 700, 1_000, 2_500, 4_000)
"""Tones the tiny model tells apart."""
RATE = 48_000
EXAMPLE_S = 10.0


def tone(hz: int, seconds: float) -> np.ndarray:
    """A sine of ``hz`` for ``seconds`` at :data:`RATE`, float32, amplitude 0.5."""
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(seconds * RATE)) / RATE)).astype(np.float32)


def store_tone_labels(bundle: Path, names: Sequence[str], tones: Sequence[Sequence[int]], folder: Path) -> Path:
    """Store in ``bundle`` a label set where label ``names[i]`` scores on the tones (indices into
    :data:`TONES_HZ`) ``tones[i]`` and on no other; returns the labels file (written in ``folder``)."""
    files = []
    for hz in TONES_HZ:
        files.append(folder / f"tone{hz}.wav")
        sf.write(files[-1], tone(hz, EXAMPLE_S), RATE)
    opened = open_bundle(bundle)
    examples = normalise(np.stack([embed_recordings(opened, [f]).mean(axis=0) for f in files]))
    dual = np.linalg.pinv(examples).T  # row i: orthogonal to every tone's embedding but tone i's
    embeddings = normalise(np.stack([dual[list(wanted)].sum(axis=0) for wanted in tones]))
    store_label_set(opened, LabelList(tuple(names), ("",) * len(names)), embeddings, "examples", ())
    labels = folder / "labels.txt"
    labels.write_text("\n".join(names) + "\n", encoding="utf-8")
    return labels


def write_tones(path: Path, sequence: Sequence[tuple[int, float]]) -> Path:
    """A WAV of ``(tone index, seconds)`` played one after the other."""
    sf.write(path, np.concatenate([tone(TONES_HZ[index], seconds) for index, seconds in sequence]), RATE)
    return path
