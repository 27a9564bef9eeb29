"""The archive's exact scans as Ray Data jobs over its files: ``logs rescore --engine ray`` (cosines, in window
order, also per stream for ``--config``) and ``logs search --exact --engine ray`` (each file's best, merged).

Rows are :class:`~desk.archive.windows.StoredRows` (a file and rows of it, from the store's file listing),
read inside the workers with :func:`~desk.archive.windows.read_rows` — each task holds one file, so a
worker's memory is bounded by one shard whatever the archive's size; each task also returns its worker's peak
resident memory, and the job reports the largest. Results come back in file order, as
:meth:`WindowStore.scan` yields them, so the writer downstream sees the same chunks and writes the same rows.
Every node needs the archive at the same path (storage every node sees) and biolingual-edge installed.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.windows import Scored, StoredRows, read_rows, top_of
from desk.ray_engine import PIECE_RETRIES, connect, first_line, remote_args_allowed
from edge.errors import BackendError, ConfigError

ENGINES = ("local", "ray")


def check_engine(engine: str, ray_address: str | None) -> None:
    """Refuse an unknown engine, and a cluster address without ``--engine ray``."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}'", f"choose one of: {', '.join(ENGINES)}")
    if ray_address is not None and engine != "ray":
        raise ConfigError("--ray-address needs --engine ray", "add --engine ray")


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


def read_files(batch: dict[str, np.ndarray], job: Callable[[StoredRows], Any]) -> dict[str, np.ndarray]:
    """A batch of pickled :class:`StoredRows` -> ``job`` of each, pickled, with the worker's pid and peak memory."""
    results = [pickle.dumps(job(pickle.loads(item))) for item in batch["stored"]]
    count = len(results)
    return {"index": np.asarray(batch["index"], dtype=np.int64), "result": np.array(results, dtype=object),
            "pid": np.full(count, os.getpid(), np.int64), "peak": np.full(count, peak_memory_bytes(), np.int64)}


def file_best(stored: StoredRows, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` windows of one file nearest the single ``query`` ``(D, 1)`` (as :func:`top_of` ranks them)."""
    return top_of(read_rows(stored, query), k)


def per_file_on_ray(files: list[StoredRows], job: Callable[[StoredRows], Any], address: str | None) -> Iterator[Any]:
    """``job(file)`` of every file, computed on a Ray cluster at ``address`` (None: a private local instance), in
    file order. A failure its retries do not heal raises :class:`BackendError` naming the files not read."""
    if not files:
        return
    with connect(address) as ray:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        rows: list[dict[str, Any]] = [{"index": i, "stored": pickle.dumps(f)} for i, f in enumerate(files)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        with remote_args_allowed():
            results = dataset.map_batches(read_files, fn_kwargs={"job": job}, batch_size=1, batch_format="numpy",
                                          num_cpus=1, max_retries=PIECE_RETRIES)
        done = 0
        peaks: dict[int, int] = {}
        try:
            for row in results.iter_rows():
                if int(row["index"]) != done:
                    raise BackendError(f"the Ray scan returned file {row['index']} before file {done}",
                                       "report this: the job ran without preserve_order")
                peaks[int(row["pid"])] = max(peaks.get(int(row["pid"]), 0), int(row["peak"]))
                yield pickle.loads(row["result"])
                done += 1
        except BackendError:
            raise
        except Exception as e:
            raise _failed(files, done, first_line(e)) from e
        if done < len(files):
            raise _failed(files, done, "the dataset ended early")
        _report_memory(peaks, files)


def scans_on_ray(files: list[StoredRows], queries: np.ndarray, address: str | None) -> Iterator[list[Scored]]:
    """Per file, in file order, the chunks :meth:`WindowStore.scan` yields for it, computed on Ray (see
    :func:`per_file_on_ray`)."""
    return per_file_on_ray(files, functools.partial(read_rows, queries=queries), address)


def scan_on_ray(files: list[StoredRows], queries: np.ndarray, address: str | None) -> Iterator[Scored]:
    """:meth:`WindowStore.scan` of ``files`` on Ray, in window order."""
    for scored in scans_on_ray(files, queries, address):
        yield from scored


def nearest_on_ray(files: list[StoredRows], query: np.ndarray, k: int, address: str | None) -> \
        tuple[np.ndarray, np.ndarray]:
    """:meth:`WindowStore.nearest` (exact) over ``files`` on Ray: each file's best ``k`` in its worker, then the
    best of those here — the same ids, cosines and order as the local scan (ties by ascending id)."""
    best = per_file_on_ray(files, functools.partial(file_best, query=query.reshape(-1, 1), k=k), address)
    return top_of((Scored(ids, scores.reshape(-1, 1)) for ids, scores in best), k)


def _report_memory(peaks: dict[int, int], files: list[StoredRows]) -> None:
    """One stderr line: the largest peak resident memory of a worker, beside the largest file it may read."""
    if not peaks or not max(peaks.values()):
        return
    largest = max(Path(f.path).stat().st_size for f in files)
    sys.stderr.write(f"ray: worker peak memory {max(peaks.values()) / 1e6:.0f} MB ({len(peaks)} workers; largest "
                     f"archive file {largest / 1e6:.1f} MB)\n")


def _failed(files: list[StoredRows], done: int, cause: str) -> BackendError:
    return BackendError(f"the Ray scan stopped: {cause}; {len(files) - done} of {len(files)} archive files not "
                        f"read (from {files[done].path})",
                        "what this run wrote is incomplete: fix the cause and rerun the command, which starts over "
                        "(or use --engine local)")
