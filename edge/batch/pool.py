"""Pieces over a local pool of processes (or this process), results in plan order for the single writer."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator

from edge.batch.piece_analysis import AnalysisSpec, PieceAnalyzer, PieceResult
from edge.batch.pieces import Piece
from edge.errors import ConfigError, EdgeError

MATH_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""numpy's BLAS reads these at import: set in a worker so workers × threads stays within the cores."""

_worker: PieceAnalyzer | EdgeError | None = None
"""This worker process's analyzer, or the typed error that building it raised (re-raised per piece: an
exception escaping a pool initializer would make the pool respawn the worker forever)."""


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_threads(workers: int | None, threads: int | None, cores: int) -> tuple[int, int]:
    """(workers, ONNX Runtime threads per worker) with workers × threads ≤ cores; None means "fill the cores"."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1", "pass --workers 1 for one process")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} must be at least 1", "leave --threads out to split the cores")
    workers = workers or max(1, cores // (threads or 1))
    threads = threads or max(1, cores // workers)
    if workers * threads > cores:
        raise ConfigError(f"--workers {workers} × --threads {threads} is more than the {cores} core(s) here",
                          "leave --threads out to split the cores among the workers, or use fewer workers")
    return workers, threads


def _start_worker(spec: AnalysisSpec) -> None:
    global _worker
    try:
        _worker = PieceAnalyzer(spec)
    except EdgeError as e:
        _worker = e


def _run_unit(piece: Piece) -> PieceResult:
    if _worker is None:
        raise RuntimeError("worker process was not initialised")
    if isinstance(_worker, EdgeError):
        raise _worker
    return _worker(piece)


@contextlib.contextmanager
def _math_threads(threads: int) -> Iterator[None]:
    """Children inherit the environment at spawn: limit their BLAS threads, then restore ours."""
    saved = {name: os.environ.get(name) for name in MATH_THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in MATH_THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_local(spec: AnalysisSpec, pieces: list[Piece], workers: int) -> Iterator[PieceResult]:
    """Results of ``pieces`` in their order; ``workers`` processes (1: in this process, no pool).

    Workers are spawned (not forked), so no thread or ONNX Runtime state of this process leaks into them;
    each builds its stages once. A worker's typed error (say, a corrupt model) is raised here.
    """
    if workers == 1 or len(pieces) <= 1:
        analyzer = PieceAnalyzer(spec)
        yield from (analyzer(piece) for piece in pieces)
        return
    context = multiprocessing.get_context("spawn")
    with _math_threads(spec.threads):
        pool = context.Pool(min(workers, len(pieces)), initializer=_start_worker, initargs=(spec,))
    try:
        yield from pool.imap(_run_unit, pieces, chunksize=1)
    finally:
        pool.terminate()
        pool.join()
