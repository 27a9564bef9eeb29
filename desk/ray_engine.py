"""``analyze --engine ray``: the same pieces through Ray Data, for archives bigger than one machine.

Rows are pieces (path, start sample, length), decoded inside the workers — not Ray's ``read_audio``,
which would decode a whole multi-hour file into one row on one node. ``map_batches`` runs
:func:`analyze_rows` as Ray tasks, one piece a task; each worker process opens the bundle once, for its first
piece, and keeps it for the next (:func:`worker_analyzer`); results travel back pickled and reach the single
writer in plan order. Tasks rather than an actor pool: a lost node's pieces are retried like any task, and Ray
has no actor to restart (an actor whose constructor arguments sit in the object store, as Ray Data passes them,
and that may restart makes Ray's C++ core print a warning on the driver's console). Desk side only: the piece
runtime never imports this module.

A local instance started here listens on 127.0.0.1 only and is shut down after the job; ``address``
joins an existing cluster instead (every node needs biolingual-edge installed and the recordings and
bundle at the same paths).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from desk.ray_stall import DEFAULT_STALL_S, Stalled, guarded, stall_cause, stall_hint
from edge.batch.piece_analysis import AnalysisSpec, PieceAnalyzer, PieceResult
from edge.batch.pieces import Piece
from edge.batch.pool import MATH_THREAD_VARIABLES, available_cores
from edge.errors import BackendError, ConfigError, EdgeError

LOOPBACK = "127.0.0.1"
LOOPBACK_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray reads this at import (as ``ray_constants.ENABLE_RAY_CLUSTER``): "0" makes a node take the loopback
address as its IP, and every Ray server then binds to it; ``ray.init(_node_ip_address="127.0.0.1")`` alone is
turned back into the external address. :func:`_start` checks the outcome, since both are Ray internals."""
NO_AUTO_CONNECT_VARIABLE = "RAY_ENABLE_AUTO_CONNECT"
"""Ray reads this at import: "0" stops a Ray call made before ``ray.init`` (or after ``ray.shutdown``) from
starting a Ray instance of its own."""
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
"""Object store of a local instance: results are small, Ray's default (30 % of memory) is not."""
PIECE_RETRIES = 3
"""Tries of a piece (or archive file) after its worker died (a lost node heals in one); Ray Data's default is
forever, so a piece that kills its worker every time would hang the job instead of failing it."""
SILENT = logging.CRITICAL + 1
"""A logging level above every record's."""
NO_LENGTH = -1
"""``length``/``total`` of a whole-file piece in a row (Arrow columns hold no None in an int column)."""


def _import_ray(local: bool) -> Any:
    # no Ray call of ours starts Ray by itself: after a stalled job is shut down, the guard's reader thread
    # (desk/ray_stall.py) must not bring up a fresh instance from inside Ray Data's iterator
    os.environ.setdefault(NO_AUTO_CONNECT_VARIABLE, "0")
    if local:
        os.environ.setdefault(LOOPBACK_ONLY_VARIABLE, "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError("--engine ray needs Ray, which is not installed",
                          "pip install 'biolingual-edge[ray]', or use --engine local") from e
    hook = getattr(getattr(ray, "_private", None), "auto_init_hook", None)
    if hook is not None:
        hook.enable_auto_connect = False  # Ray was already imported by someone else: same effect as above
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if local and constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # Ray was already imported by someone else: same effect as above
    return ray


def piece_rows(pieces: list[Piece]) -> list[dict[str, Any]]:
    """One Ray Data row per piece: where to read, nothing decoded yet."""
    return [{"index": u.index, "file_index": u.file_index, "path": str(u.path), "start": u.start_sample,
             "length": NO_LENGTH if u.length is None else u.length,
             "total": NO_LENGTH if u.total is None else u.total} for u in pieces]


def _piece_from_row(batch: dict[str, np.ndarray], row: int) -> Piece:
    from pathlib import Path

    length, total = int(batch["length"][row]), int(batch["total"][row])
    return Piece(int(batch["index"][row]), int(batch["file_index"][row]), Path(str(batch["path"][row])),
                    int(batch["start"][row]), None if length == NO_LENGTH else length,
                    None if total == NO_LENGTH else total)


_WORKER: tuple[bytes, PieceAnalyzer] | None = None
"""This worker process's analyzer and the (pickled) spec it was built for."""


def worker_analyzer(spec: AnalysisSpec) -> PieceAnalyzer:
    """The analyzer of ``spec`` in this Ray worker process: built (the bundle opened, the model loaded) by its
    first piece, kept for the next pieces of the job (Ray reuses a job's workers for its tasks)."""
    global _WORKER
    key = pickle.dumps(spec)
    if _WORKER is None or _WORKER[0] != key:
        _WORKER = None  # the last job's session goes before the next is loaded
        os.environ.update({name: str(spec.threads) for name in MATH_THREAD_VARIABLES})
        _WORKER = key, PieceAnalyzer(spec)
    return _WORKER[1]


def analyze_rows(batch: dict[str, np.ndarray], spec: AnalysisSpec) -> dict[str, np.ndarray]:
    """A Ray task: a batch of piece rows -> their pickled results and the node that computed them (the job reports
    its placement)."""
    import ray

    analyzer = worker_analyzer(spec)
    node = ray.get_runtime_context().get_node_id()
    results = [pickle.dumps(analyzer(_piece_from_row(batch, row))) for row in range(len(batch["index"]))]
    return {"index": np.asarray(batch["index"], dtype=np.int64), "result": np.array(results, dtype=object),
            "node": np.array([node] * len(results), dtype=object)}


def _start(ray: Any, address: str | None, cpus: int) -> None:
    common = {"configure_logging": False, "log_to_driver": False, "include_dashboard": False}
    if address is not None:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot join the Ray cluster at {address} ({str(e).splitlines()[0]})",
                              "check the address with `ray status` on the head node; a cluster with token "
                              "authentication needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN_PATH or "
                              "RAY_AUTH_TOKEN) here too, as scripts/local_cluster.sh start prints") from e
        return
    try:
        context = ray.init(address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
    except Exception as e:  # Ray raises a bare Exception when its raylet misses its 30 s start-up
        ray.shutdown()
        raise BackendError(f"the private Ray instance did not start ({first_line(e)})",
                           "a machine this busy may miss Ray's start-up deadline: rerun when it is quieter, or use "
                           "--engine local") from e
    node_ip = context.address_info.get("node_ip_address")
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise BackendError(f"the local Ray instance took {node_ip} instead of {LOOPBACK}",
                           f"this Ray version ignores {LOOPBACK_ONLY_VARIABLE}=0; start a cluster bound to "
                           "127.0.0.1 yourself (ray start --head --node-ip-address 127.0.0.1) and pass --ray-address")


@contextmanager
def connect(address: str | None, cpus: int | None = None) -> Iterator[Any]:
    """``ray`` joined to the cluster at ``address``, or to a private local instance of ``cpus`` CPUs (default:
    this machine's) listening on 127.0.0.1 only; shut down (left, for a cluster) on the way out. Ray's own
    console logging is off meanwhile (:func:`console_quiet`)."""
    ray = _import_ray(local=address is None or _is_loopback(address))
    with console_quiet():
        _start(ray, address, cpus or available_cores())
        try:
            yield ray
        finally:
            ray.shutdown()


@contextmanager
def console_quiet() -> Iterator[None]:
    """Ray's and Ray Data's console output off: no progress log, no warning, no traceback above our one-line error
    (a job's workers print nothing here already: ``log_to_driver=False``). Ray Data's log file in the Ray session
    folder keeps everything. ``ray.init(configure_logging=False)`` leaves the "ray" logger without handlers, so
    its records would reach Python's last-resort handler: its level is raised instead."""
    quieted: list[logging.Logger | logging.Handler] = [logging.getLogger("ray")]
    quieted += [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [item.level for item in quieted]
    for item in quieted:
        item.setLevel(SILENT)
    try:
        yield
    finally:
        for item, level in zip(quieted, levels):
            item.setLevel(level)


@contextmanager
def data_options(**options: Any) -> Iterator[None]:
    """Ray Data's execution settings of this process (``DataContext``) set for one job, and put back after."""
    from ray.data import DataContext

    context = DataContext.get_current()
    execution = context.execution_options
    owners = {name: execution if name in EXECUTION_OPTIONS else context for name in options}
    saved = {name: getattr(owners[name], name) for name in options}
    for name, value in options.items():
        setattr(owners[name], name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owners[name], name, value)


EXECUTION_OPTIONS = ("preserve_order", "resource_limits")
"""Settings :func:`data_options` sets on the context's ``execution_options`` (the rest on the context)."""


@contextmanager
def remote_args_allowed() -> Iterator[None]:
    """Ray 2.60 has no named ``map_batches`` parameter for task retries yet: pass them as remote args without
    its deprecation warning (here only; Ray's other warnings stay)."""
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
        yield


def _is_loopback(address: str) -> bool:
    """A cluster on this machine's loopback (Ray would otherwise rewrite 127.0.0.1 to the external address)."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in (LOOPBACK, "localhost", "::1")


def _edge_cause(error: BaseException) -> EdgeError | None:
    """The typed error a worker raised, from inside Ray's wrappers (``cause`` / ``__cause__`` chains)."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None or isinstance(seen, EdgeError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


def pieces_not_done(pieces: list[Piece], done: int) -> str:
    """``pieces[done:]`` in words: how many, their numbers (1-based, as the progress bar counts) and files."""
    left = pieces[done:]
    files = sorted({u.path.name for u in left})
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (f"pieces {left[0].index + 1}-{left[-1].index + 1} ({len(left)} of {len(pieces)} here; "
            f"files {shown}) not done")


RESUME_HINT = "the work log keeps what was written: rerun the same command with --resume to finish"


def _failed(pieces: list[Piece], done: int, cause: str, hint: str = RESUME_HINT) -> BackendError:
    return BackendError(f"the Ray job stopped: {cause}; {pieces_not_done(pieces, done)}", hint)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else 'no message'}"


def _report_placement(placement: Counter[str]) -> None:
    """One stderr line: pieces per Ray node, so a user sees the cluster was used."""
    parts = ", ".join(f"{count} on node {node[:12]}" for node, count in sorted(placement.items()))
    sys.stderr.write(f"ray: pieces per node: {parts}\n")


def run_ray(spec: AnalysisSpec, pieces: list[Piece], workers: int | None, address: str | None,
            cpus: int | None = None, stall_s: float = DEFAULT_STALL_S) -> Iterator[PieceResult]:
    """Results of ``pieces`` in plan order from at most ``workers`` Ray tasks at once (None: the cluster's CPUs /
    threads), one piece a task.

    Never ends early and never hangs: a Ray failure that its retries do not heal (a lost node whose results
    cannot be recomputed, a piece that kills its worker every try), a job that makes no progress for the stall
    limit (:mod:`desk.ray_stall`, ``stall_s``), and a dataset that ends with pieces missing each raise
    :class:`BackendError` naming the pieces not done.
    """
    with connect(address, cpus or (workers or 1) * spec.threads) as ray, data_options(preserve_order=True):
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // spec.threads)
        dataset = ray.data.from_items(piece_rows(pieces), override_num_blocks=max(1, len(pieces)))
        pool = ray.data.TaskPoolStrategy(size=min(workers, max(1, len(pieces))))
        with remote_args_allowed():
            results = dataset.map_batches(analyze_rows, fn_kwargs={"spec": spec}, batch_size=1,
                                          batch_format="numpy", compute=pool,
                                          num_cpus=spec.threads, max_retries=PIECE_RETRIES)
        waiting: dict[int, PieceResult] = {}
        placement: Counter[str] = Counter()
        done = 0
        try:
            for row in guarded(results.iter_rows(), stall_s):
                result: PieceResult = pickle.loads(row["result"])
                placement[str(row["node"])] += 1
                waiting[result.index] = result
                while done < len(pieces) and pieces[done].index in waiting:
                    yield waiting.pop(pieces[done].index)
                    done += 1
        except Stalled as e:
            raise _failed(pieces, done, stall_cause(e), f"{RESUME_HINT}; {stall_hint(stall_s)}") from None
        except Exception as e:  # Ray wraps what a worker raised; show the typed error as one line
            cause = _edge_cause(e)
            if cause is not None:
                raise cause from e
            raise _failed(pieces, done, first_line(e)) from e
        if done < len(pieces):
            raise _failed(pieces, done, "the dataset ended early")
        _report_placement(placement)
