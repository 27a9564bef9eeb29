"""Pieces: (file, start sample, length) parts of an archive whose windows stay on the file's own grid.

A piece owns the windows of its file whose start lies in ``[start_sample, start_sample + length)``; it reads
past its end as far as its last window needs. Piece starts are multiples of ``batch × hop`` so that every
inference batch holds the same windows as in one pass over the whole file, and the file's last piece also
owns the end-aligned tail window. Concatenating the windows of a file's pieces in order therefore gives
exactly the windows of :class:`edge.audio.windowing.Windower` over the whole file
(``tests/edge/batch/test_workunits.py``).

Files at another rate are read through :class:`edge.audio.seekable.SeekableAudio`, whose segment-wise
resampling gives any range exactly as one pass would; only files that cannot be seeked sample-exactly
(MP3, Ogg) are one whole-file piece, streamed from sample 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from edge.audio.files import stream_file
from edge.audio.seekable import SEEKABLE_FORMATS, SeekableAudio, resampled_length
from edge.audio.windowing import Window, Windower
from edge.stream.pipeline import batched_windows

DEFAULT_PIECE_S = 300.0
"""Audio per piece, seconds: small enough to spread one long recording over many workers and to lose
little on a kill, large enough that per-piece overhead (open, seek, first full log-mel) stays negligible."""


@dataclass(frozen=True)
class WindowGrid:
    """Window and hop lengths and the inference batch, in model-rate samples / windows."""

    window: int
    hop: int
    batch: int

    @property
    def batch_span(self) -> int:
        """Samples between the starts of consecutive inference batches (piece starts are multiples of it)."""
        return self.batch * self.hop


@dataclass(frozen=True)
class Piece:
    """Windows of ``path`` starting in ``[start_sample, start_sample + length)`` at the model rate.

    ``length`` is None for a whole-file piece (streamed and resampled from sample 0).
    """

    index: int
    """Position in the plan: the single writer emits pieces in this order."""
    file_index: int
    path: Path
    start_sample: int = 0
    length: int | None = None
    total: int | None = None
    """Samples in the whole file at the model rate (None for whole-file pieces)."""

    @property
    def is_last_of_file(self) -> bool:
        return self.length is None or self.total is None or self.start_sample + self.length >= self.total

    @property
    def key(self) -> str:
        """Stable identity for the work log."""
        return f"{self.path}\t{self.start_sample}\t{self.length}"


def splittable_length(path: Path, rate: int) -> int | None:
    """Samples of ``path`` at ``rate`` when it is sample-exactly seekable, else None (one whole-file piece)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None  # the whole-file piece reports the error when it is analysed
    if info.format not in SEEKABLE_FORMATS or info.frames <= 0:
        return None
    return resampled_length(int(info.frames), int(info.samplerate), rate)


def plan_pieces(files: list[Path], rate: int, grid: WindowGrid, piece_samples: int) -> list[Piece]:
    """Cut every file into pieces of about ``piece_samples`` (rounded up to whole batches), in file order."""
    step = max(1, -(-piece_samples // grid.batch_span)) * grid.batch_span
    pieces: list[Piece] = []
    for file_index, path in enumerate(files):
        total = splittable_length(path, rate)
        if total is None:
            pieces.append(Piece(len(pieces), file_index, path))
            continue
        # the last piece must own at least one regular window, so the tail window is end-aligned as in one pass
        last_regular_start = max(0, total - grid.window)
        start = 0
        while True:
            end = start + step
            if end > last_regular_start:
                pieces.append(Piece(len(pieces), file_index, path, start, total - start, total))
                break
            pieces.append(Piece(len(pieces), file_index, path, start, step, total))
            start = end
    return pieces


def unit_window_spans(piece: Piece, grid: WindowGrid) -> list[tuple[int, int]]:
    """(start, end) samples of the windows a split piece owns, as :class:`Windower` would cut the whole file."""
    if piece.length is None or piece.total is None:
        raise ValueError("whole-file pieces are windowed while streaming")
    total, end = piece.total, piece.start_sample + piece.length
    if total < grid.window:
        return [(0, total)]
    first = -(-piece.start_sample // grid.hop) * grid.hop
    spans = [(s, s + grid.window) for s in range(first, min(end, total - grid.window + 1), grid.hop)]
    if piece.is_last_of_file and spans and spans[-1][1] < total:
        spans.append((total - grid.window, total))
    return spans


def piece_batches(piece: Piece, rate: int, grid: WindowGrid) -> Iterator[list[Window]]:
    """The piece's windows in inference batches, decoded batch by batch (memory bounded by one batch)."""
    if piece.length is None:
        yield from batched_windows(stream_file(piece.path, rate), Windower(grid.window, grid.hop), grid.batch)
        return
    spans = unit_window_spans(piece, grid)
    with SeekableAudio(piece.path, rate) as audio:
        for i in range(0, len(spans), grid.batch):
            batch = spans[i : i + grid.batch]
            lo, hi = batch[0][0], max(end for _, end in batch)
            samples = audio.read(lo, hi)  # a fresh array or a cached segment, never written to: windows are views
            yield [Window(s, samples[s - lo : e - lo]) for s, e in batch]
