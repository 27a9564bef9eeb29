"""One piece analysed in whichever process holds the model: windows -> log-mel -> embeddings -> detections.

Everything here is picklable (options, specs, results), so a local process pool or Ray actors run the same
:class:`PieceAnalyzer` and send the same :class:`PieceResult` back to the single writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.batch.cli_defaults import ANALYZE_BATCH, DEFAULT_FORMATS
from edge.batch.pieces import Piece, WindowGrid, piece_batches
from edge.errors import AudioError
from edge.model.bundle import FileStamp, open_bundle
from edge.scoring.labels import read_labels
from edge.stream.detector import Detection
from edge.stream.pipeline import Stages, build_stages


@dataclass(frozen=True)
class AnalyzeOptions:
    """Analysis settings; durations in seconds, converted to samples at the model rate."""

    window_s: float = 10.0
    hop_s: float = 5.0
    threshold: float | None = None
    top_k: int = 1
    precision: str = "fp32"
    score_mode: str = "logit"
    threads: int | None = None
    """ONNX Runtime threads per worker (None: the cores divided among the workers)."""
    batch: int = ANALYZE_BATCH
    force_precision: bool = False
    """Use a precision even if its parity report is missing or failed."""
    embeddings_dir: Path | None = None
    """Also archive every window's embedding here (``embeddings/*.emb``, for ``logs collect``), with the card log
    of each recording (effort, detections) so the folder is collected as a season (``edge/card/recording_log.py``)."""
    unit_id: str | None = None
    """Recorder/site id of every recording in that season; None: each recording's folder name."""
    heads: tuple[str, ...] = ()
    """Trained heads of the bundle scored next to the label list (``logs train-head --name``)."""
    formats: tuple[str, ...] = DEFAULT_FORMATS
    """Result tables written (``--format``): csv, raven, audacity."""


@dataclass(frozen=True)
class AnalysisSpec:
    """What every worker needs to build its stages once and analyse pieces."""

    bundle_dir: Path
    labels_path: Path
    options: AnalyzeOptions
    grid: WindowGrid
    rate: int
    """Model sample rate, Hz."""
    threads: int
    """ONNX Runtime intra-op threads in this worker."""
    keep_embeddings: bool = False
    """Return each window's audio embedding with the detections (for an embedding archive)."""
    verify_bundle: bool = False
    """Check, in the worker, the checksums of the bundle files it reads (a Ray worker may run on another machine):
    those in ``verified`` that are unchanged since the parent hashed them are not hashed again."""
    verified: tuple[tuple[str, FileStamp], ...] = ()
    """Bundle files the parent verified, with their stamps then (:meth:`Bundle.stamps`)."""


@dataclass(frozen=True)
class PieceResult:
    """What a worker sends back for one piece; ``error`` set means the piece could not be read."""

    index: int
    detections: tuple[Detection, ...] = ()
    window_starts: tuple[int, ...] = ()
    """Start sample of every window analysed, in order (model rate, from file start)."""
    window_ends: tuple[int, ...] = ()
    embeddings: np.ndarray | None = field(default=None, compare=False)
    """``(windows, D)`` float32 L2-normalised audio embeddings when the spec keeps them, else None."""
    error: str | None = None


def build_spec_stages(spec: AnalysisSpec) -> Stages:
    """The stages of one worker: the bundle's backend opened once, label embeddings loaded once."""
    options = spec.options
    bundle = open_bundle(spec.bundle_dir, verify="on_read" if spec.verify_bundle else False,
                         trusted=dict(spec.verified))
    return build_stages(bundle, read_labels(spec.labels_path), str(spec.labels_path), precision=options.precision,
                        threads=spec.threads, score_mode=options.score_mode, top_k=options.top_k,
                        threshold=options.threshold, force_precision=options.force_precision, heads=options.heads)


class PieceAnalyzer:
    """Analyses pieces with stages built once (per process, per Ray actor)."""

    def __init__(self, spec: AnalysisSpec) -> None:
        self.spec = spec
        self.stages = build_spec_stages(spec)

    def __call__(self, piece: Piece) -> PieceResult:
        stages = self.stages
        stages.frontend.reset()
        detections: list[Detection] = []
        starts: list[int] = []
        ends: list[int] = []
        embeddings: list[np.ndarray] = []
        try:
            for windows in piece_batches(piece, self.spec.rate, self.spec.grid):
                batch_starts = [w.start_sample for w in windows]
                batch_ends = [w.end_sample for w in windows]
                embedded = stages.backend.embed(stages.frontend.batch(windows))
                detections.extend(stages.selector(batch_starts, batch_ends, stages.scorer.score(embedded)))
                starts.extend(batch_starts)
                ends.extend(batch_ends)
                if self.spec.keep_embeddings:
                    embeddings.append(embedded)
        except AudioError as e:
            return PieceResult(piece.index, error=str(e))
        kept = np.concatenate(embeddings) if embeddings else None
        return PieceResult(piece.index, tuple(detections), tuple(starts), tuple(ends), kept)
