"""``logs rescore --engine ray``: the archive's exact scan as a Ray Data job over its files.

Rows are :class:`~desk.archive.windows.StoredRows` (a file and rows of it, from the store's file listing),
read inside the workers with :func:`~desk.archive.windows.read_rows` — each task holds one file, so a
worker's memory is bounded by one shard whatever the archive's size. Results come back in window order, as
:meth:`WindowStore.scan` yields them, so the writer downstream sees the same chunks and writes the same rows.
Every node needs the archive at the same path (storage every node sees) and biolingual-edge installed.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np

from desk.archive.windows import Scored, StoredRows, read_rows
from desk.ray_engine import PIECE_RETRIES, connect, first_line, remote_args_allowed
from edge.errors import BackendError


def score_files(batch: dict[str, np.ndarray], queries: np.ndarray) -> dict[str, np.ndarray]:
    """A batch of pickled :class:`StoredRows` -> their pickled lists of :class:`Scored` (one file per row)."""
    scored = [pickle.dumps(read_rows(pickle.loads(item), queries)) for item in batch["stored"]]
    return {"index": np.asarray(batch["index"], dtype=np.int64), "scored": np.array(scored, dtype=object)}


def scan_on_ray(files: list[StoredRows], queries: np.ndarray, address: str | None) -> Iterator[Scored]:
    """:meth:`WindowStore.scan` of ``files`` on a Ray cluster at ``address`` (None: a private local instance),
    in file order. A failure its retries do not heal raises :class:`BackendError` naming the files not read."""
    if not files:
        return
    with connect(address) as ray:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        rows: list[dict[str, Any]] = [{"index": i, "stored": pickle.dumps(f)} for i, f in enumerate(files)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        with remote_args_allowed():
            results = dataset.map_batches(score_files, fn_kwargs={"queries": queries}, batch_size=1,
                                          batch_format="numpy", num_cpus=1, max_retries=PIECE_RETRIES)
        done = 0
        try:
            for row in results.iter_rows():
                if int(row["index"]) != done:
                    raise BackendError(f"the Ray scan returned file {row['index']} before file {done}",
                                       "report this: the job ran without preserve_order")
                yield from pickle.loads(row["scored"])
                done += 1
        except BackendError:
            raise
        except Exception as e:
            raise _failed(files, done, first_line(e)) from e
        if done < len(files):
            raise _failed(files, done, "the dataset ended early")


def _failed(files: list[StoredRows], done: int, cause: str) -> BackendError:
    return BackendError(f"the Ray scan stopped: {cause}; {len(files) - done} of {len(files)} archive files not "
                        f"read (from {files[done].path})",
                        "the tables written so far are incomplete: fix the cause and rerun (or use --engine local)")
