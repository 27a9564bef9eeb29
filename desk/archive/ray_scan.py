"""The archive's exact scans as Ray Data jobs over its files: ``logs rescore --engine ray`` (cosines, in window
order, also per stream for ``--config``) and ``logs search --exact --engine ray`` (each file's best, merged).

Rows are :class:`~desk.archive.windows.StoredRows` (a file and rows of it, from the store's file listing),
read inside the workers with :func:`~desk.archive.windows.read_rows`. A task streams its file's result back part
by part (a Ray generator task, each part its own block): a worker holds one scan chunk of scores and one chunk of
mapped pages at a time, whatever the file's size or the label count. Each file ends with a row carrying the
worker's peak resident memory, its task's id and the largest part it sent; the job reports the largest peak and
what bounds a worker's working set: the archive files a task took (one) and the largest part it held. Parts come
back in file order, as :meth:`WindowStore.scan` yields them, so the writer downstream sees the same chunks and
writes the same rows; the object store holds at most two parts per CPU of them (:func:`store_budget`).
A job that makes no progress fails after the stall limit (:mod:`desk.ray_stall`). Every node needs the archive
at the same path (storage every node sees) and biolingual-edge installed.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.windows import Scored, StoredRows, read_rows, top_of
from desk.ray_engine import PIECE_RETRIES, connect, data_options, first_line, remote_args_allowed
from desk.ray_stall import DEFAULT_STALL_S, Stalled, check_stall_seconds, guarded, stall_cause, stall_hint
from edge.errors import BackendError, ConfigError

ENGINES = ("local", "ray")


def check_engine(engine: str, ray_address: str | None, ray_stall_s: float | None = None) -> None:
    """Refuse an unknown engine, a cluster address or stall limit without ``--engine ray``, and a stall limit that
    is not a positive number of seconds."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}'", f"choose one of: {', '.join(ENGINES)}")
    for flag, given in (("--ray-address", ray_address), ("--ray-stall-seconds", ray_stall_s)):
        if given is not None and engine != "ray":
            raise ConfigError(f"{flag} needs --engine ray", "add --engine ray")
    if ray_stall_s is not None:
        check_stall_seconds(ray_stall_s)


def stall_seconds(given: float | None) -> float:
    """``--ray-stall-seconds``, or its default."""
    return DEFAULT_STALL_S if given is None else given


def peak_memory_bytes() -> int:
    """This process's peak resident memory (VmHWM), 0 where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def read_files(batch: dict[str, np.ndarray], job: Callable[[StoredRows], Iterable[Any]]) -> \
        Iterator[dict[str, np.ndarray]]:
    """A batch of pickled :class:`StoredRows` -> for each, one row per part ``job`` yields for it (pickled, numbered),
    then an end row with the worker's pid, peak memory, task id and largest part; a part leaves the worker before
    the next is made."""
    import ray

    task = ray.get_runtime_context().get_task_id() or ""
    for index, item in zip(batch["index"], batch["stored"]):
        parts = largest = 0
        for result in job(pickle.loads(item)):
            sent = pickle.dumps(result)
            largest = max(largest, len(sent))
            yield _part_row(int(index), parts, sent)
            parts += 1
        yield {**_part_row(int(index), parts, b""), "end": np.array([True]), "task": np.array([task], dtype=object),
               "peak": np.array([peak_memory_bytes()], np.int64), "largest": np.array([largest], np.int64)}


def _part_row(index: int, part: int, result: bytes) -> dict[str, np.ndarray]:
    return {"index": np.array([index], np.int64), "part": np.array([part], np.int64), "end": np.array([False]),
            "result": np.array([result], dtype=object), "pid": np.array([os.getpid()], np.int64),
            "task": np.array([""], dtype=object), "peak": np.array([0], np.int64), "largest": np.array([0], np.int64)}


@dataclass
class WorkerLoad:
    """What the job's workers held, from the files' end rows: the bound on a worker's memory is one task's files
    (one) and its largest part, whatever the archive's size."""

    peaks: dict[int, int] = field(default_factory=dict)
    """Peak resident memory (VmHWM, bytes) of each worker process, by pid."""
    files_of_task: Counter[str] = field(default_factory=Counter)
    """Archive files each Ray task read, by task id."""
    largest_part: int = 0
    """Bytes of the largest part a task sent back (pickled)."""

    def add(self, row: dict[str, Any]) -> None:
        pid = int(row["pid"])
        self.peaks[pid] = max(self.peaks.get(pid, 0), int(row["peak"]))
        self.files_of_task[str(row["task"])] += 1
        self.largest_part = max(self.largest_part, int(row["largest"]))

    def line(self, files: list[StoredRows]) -> str:
        """``ray: worker peak memory …``: the busiest worker's peak beside the largest file, the tasks and what
        one held."""
        largest = max(Path(f.path).stat().st_size for f in files)
        return (f"ray: worker peak memory {max(self.peaks.values(), default=0) / 1e6:.0f} MB ({len(self.peaks)} "
                f"workers; largest archive file {largest / 1e6:.1f} MB; {len(self.files_of_task)} tasks, at most "
                f"{max(self.files_of_task.values(), default=0)} archive file a task, largest part sent "
                f"{self.largest_part / 1e6:.2f} MB)\n")


def file_best(stored: StoredRows, query: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``k`` windows of one file nearest the single ``query`` ``(D, 1)`` (as :func:`top_of` ranks them): one
    part."""
    return [top_of(read_rows(stored, query), k)]


def parts_on_ray(files: list[StoredRows], job: Callable[[StoredRows], Iterable[Any]], part_bytes: int,
                 address: str | None, stall_s: float = DEFAULT_STALL_S) -> Iterator[tuple[int, Any]]:
    """(file's place in ``files``, a part of ``job(file)``) of every file, computed on a Ray cluster at ``address``
    (None: a private local instance), in file order and each file's parts in order; a part is at most about
    ``part_bytes``. A failure its retries do not heal, or no progress for the stall limit, raises
    :class:`BackendError` naming the files not read."""
    if not files:
        return
    from ray.data import ExecutionResources

    with connect(address) as ray, data_options(
            preserve_order=True, target_max_block_size=1,
            resource_limits=ExecutionResources.for_limits(object_store_memory=store_budget(ray, part_bytes))):
        # target_max_block_size=1: every part a task yields is a block of its own, sent on at once
        rows: list[dict[str, Any]] = [{"index": i, "stored": pickle.dumps(f)} for i, f in enumerate(files)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        with remote_args_allowed():
            results = dataset.map_batches(read_files, fn_kwargs={"job": job}, batch_size=1, batch_format="numpy",
                                          num_cpus=1, max_retries=PIECE_RETRIES)
        done = part = 0
        load = WorkerLoad()
        try:
            for row in guarded(results.iter_rows(), stall_s):
                place = (int(row["index"]), int(row["part"]))
                if place < (done, part):
                    continue  # a retried task yields its file's parts again: they were taken already
                if place != (done, part):
                    raise BackendError(f"the Ray scan returned part {place[1]} of file {place[0]} before part "
                                       f"{part} of file {done}", "report this: the job ran without preserve_order")
                if row["end"]:
                    load.add(row)
                    done, part = done + 1, 0
                    continue
                yield done, pickle.loads(row["result"])
                part += 1
        except BackendError:
            raise
        except Stalled as e:
            raise _failed(files, done, stall_cause(e), stall_hint(stall_s)) from None
        except Exception as e:
            raise _failed(files, done, first_line(e)) from e
        if done < len(files):
            raise _failed(files, done, "the dataset ended early")
        sys.stderr.write(load.line(files))


PARTS_IN_STORE_PER_CPU = 2
"""Parts of a job the object store holds per cluster CPU (a task's part being read while it makes the next): more
would only queue for the driver, which writes every row, and count in the workers' memory (the store's pages they
write into)."""


def store_budget(ray: Any, part_bytes: int) -> int:
    """The object store memory a job may fill (Ray Data's ``resource_limits``): without one Ray Data fills a share
    of every node's store (30 % of its memory by default), and each worker's resident memory with it."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return cpus * PARTS_IN_STORE_PER_CPU * max(part_bytes, MIN_PART_BYTES)


MIN_PART_BYTES = 1024**2
"""Parts smaller than this (a file's best ``k``) are budgeted as this: room for every CPU's task whatever its
size."""


def scans_on_ray(files: list[StoredRows], queries: np.ndarray, address: str | None,
                 stall_s: float = DEFAULT_STALL_S) -> Iterator[tuple[int, Scored]]:
    """(file's place in ``files``, a chunk of its scan): per file, in file order, the chunks
    :meth:`WindowStore.scan` yields for it, computed on Ray (see :func:`parts_on_ray`)."""
    from desk.archive.store import SCAN_CELLS

    step = max(1, SCAN_CELLS // max(queries.shape[1], 1))
    part_bytes = step * (queries.shape[1] * 4 + 8)  # a scan chunk's float32 cosines and int64 ids
    return parts_on_ray(files, functools.partial(read_rows, queries=queries), part_bytes, address, stall_s)


def scan_on_ray(files: list[StoredRows], queries: np.ndarray, address: str | None,
                stall_s: float = DEFAULT_STALL_S) -> Iterator[Scored]:
    """:meth:`WindowStore.scan` of ``files`` on Ray, in window order."""
    for _, scored in scans_on_ray(files, queries, address, stall_s):
        yield scored


def nearest_on_ray(files: list[StoredRows], query: np.ndarray, k: int, address: str | None,
                   stall_s: float = DEFAULT_STALL_S) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`WindowStore.nearest` (exact) over ``files`` on Ray: each file's best ``k`` in its worker, then the
    best of those here — the same ids, cosines and order as the local scan (ties by ascending id)."""
    best = parts_on_ray(files, functools.partial(file_best, query=query.reshape(-1, 1), k=k), k * 12, address, stall_s)
    return top_of((Scored(ids, scores.reshape(-1, 1)) for _, (ids, scores) in best), k)


def _failed(files: list[StoredRows], done: int, cause: str, advice: str = "") -> BackendError:
    return BackendError(f"the Ray scan stopped: {cause}; {len(files) - done} of {len(files)} archive files not "
                        f"read (from {files[done].path})",
                        "what this run wrote is incomplete: fix the cause and rerun the command, which starts over "
                        f"(or use --engine local){'; ' + advice if advice else ''}")
