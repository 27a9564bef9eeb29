"""Pieces over a local pool of processes (or this process), results in plan order for the single writer."""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from edge.batch.piece_analysis import AnalysisSpec, PieceAnalyzer, PieceResult
from edge.batch.pieces import Piece
from edge.errors import ConfigError, EdgeError

MATH_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""numpy's BLAS reads these at import: set in a worker so workers × threads stays within the cores."""
IN_FLIGHT_PER_WORKER = 2
"""Pieces submitted per worker ahead of the writer (results wait in plan order; memory stays bounded)."""
MAX_TRIES = 2
"""A piece whose worker process dies is tried once more, alone; a second death fails the piece."""

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
    each builds its stages once. A worker's typed error (say, a corrupt model) is raised here. A worker that
    dies (``kill -9``, the OOM killer) breaks the pool: it is restarted and the pieces that were in flight are
    retried one at a time; a piece whose worker dies again comes back as a failed piece naming it (the run
    then exits non-zero), never a hang and never a silent gap.
    """
    if workers == 1 or len(pieces) <= 1:
        analyzer = PieceAnalyzer(spec)
        yield from (analyzer(piece) for piece in pieces)
        return
    yield from _PoolRun(spec, min(workers, len(pieces))).results(pieces)


def died_error(piece: Piece, rate: int) -> str:
    """The failure line of a piece whose worker process died on both tries."""
    where = "" if piece.length is None else (f" from {piece.start_sample / rate:.1f} s to "
                                             f"{(piece.start_sample + piece.length) / rate:.1f} s")
    return (f"{piece.path}{where}: the worker process died twice analysing it (killed by a signal or the "
            "out-of-memory killer); its windows are missing from the results — rerun with fewer --workers "
            "or more memory, then --resume")


class _PoolRun:
    """A spawned process pool that survives its workers dying (see :func:`run_local`)."""

    def __init__(self, spec: AnalysisSpec, workers: int) -> None:
        self.spec = spec
        self.workers = workers
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.spec,))

    def _submit(self, piece: Piece) -> Future[PieceResult]:
        with _math_threads(self.spec.threads):  # workers are spawned on demand, at submit
            return self.executor.submit(_run_unit, piece)

    def results(self, pieces: list[Piece]) -> Iterator[PieceResult]:
        queue = collections.deque(range(len(pieces)))
        retry: collections.deque[int] = collections.deque()
        tries = [0] * len(pieces)
        finished: dict[int, PieceResult] = {}
        running: dict[Future[PieceResult], int] = {}
        emitted = 0
        try:
            while emitted < len(pieces):
                if retry and not running:  # a piece retried after a worker died runs alone: a second death is its own
                    position = retry.popleft()
                    running[self._submit(pieces[position])] = position
                while not retry and queue and len(running) < IN_FLIGHT_PER_WORKER * self.workers:
                    position = queue.popleft()
                    running[self._submit(pieces[position])] = position
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    position = running.pop(future)
                    try:
                        finished[position] = future.result()
                    except BrokenProcessPool:
                        broken = True
                        running[future] = position
                if broken:
                    lost = sorted(running.values())
                    running.clear()
                    self._restart()
                    for position in lost:
                        tries[position] += 1
                        if tries[position] >= MAX_TRIES:
                            finished[position] = PieceResult(pieces[position].index,
                                                             error=died_error(pieces[position], self.spec.rate))
                        else:
                            retry.append(position)
                while emitted in finished:
                    yield finished.pop(emitted)
                    emitted += 1
        finally:
            self._stop()

    def _restart(self) -> None:
        self._stop()
        self.executor = self._start()

    def _stop(self) -> None:
        """End the pool now: cancel what has not started and kill the workers (an early exit must not wait)."""
        workers = dict(getattr(self.executor, "_processes", None) or {})  # no public kill before Python 3.14
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in workers.values():
            if process.is_alive():
                process.kill()
                process.join()
