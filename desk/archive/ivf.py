"""The archive's approximate nearest-neighbour index: a faiss inverted file of 8-bit codes, memory-mapped.

Chosen by measurement (``benchmarks/ann_candidates.py``, BENCHMARKS.md *Season archive*): faiss-cpu's IVF-SQ8
builds several times faster than any graph (usearch, hnswlib, faiss HNSW: 1–2 k windows/s here, against the
~20 k a 60 s collect of a million windows needs), answers in a millisecond at a million windows with recall@10
of 1.00 after the exact re-rank, and its inverted lists can be memory-mapped and stacked. Layout under
``<db>.archive/index/``: ``trained.faiss`` (the coarse centroids and the 8-bit quantiser, trained once on a
sample of the first windows indexed, no vectors) and one ``seg-<first id>-<last id>.faiss`` per segment: the
same index holding those windows (ids = window ids), written once and never rewritten. faiss's own
``read_index`` opens every file. A query stacks the segments' lists (one coarse search), probes the
``nprobe`` nearest lists and returns candidates that the store re-ranks exactly on the archive's float16
vectors. An index of the earlier numpy layout (``centroids.npy``) is removed and built again in this one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from desk.archive.windows import WindowShapeError
from edge.card.cardformat import TEMP_PREFIX

INDEX_DIR = "index"
TRAINED = "trained.faiss"
LEGACY = "centroids.npy"
"""The earlier numpy index's centroids: its folder is rebuilt in this layout."""
LISTS = 1024
"""Inverted lists (coarse centroids); fewer when the first windows indexed are too few to train them."""
WINDOWS_PER_LIST_TRAINED = 32
TRAIN_SAMPLE = 32_768
TRAIN_ROUNDS = 8
PROBES = 16
"""Lists probed per query up to :data:`FEWER_PROBES_ABOVE` windows: ~1.6 % of them compared by their codes."""
FEWER_PROBES_ABOVE = 2_000_000
LARGE_PROBES = 8
"""Lists probed above that size (lists of 2 000+ windows): recall@10 1.00 at 1 M with 8 as with 16, and a 10 M
query scans half the codes (23 against 82 ms, ``benchmarks/ann_candidates.py --stack``)."""
SEGMENT_WINDOWS = 200_000
"""Windows per segment, held in memory while it is built: 512 B of codes + 8 B of id each, ~104 MB."""
MIN_WINDOWS = 20_000
"""Below this an archive has no index: an exact scan takes milliseconds."""


def faiss_module() -> Any:
    """faiss (faiss-cpu, the ``desk`` extra), imported on first use."""
    import faiss

    return faiss


class IvfIndex:
    """The index folder of one archive: train, append segments, search."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.legacy = (folder / LEGACY).is_file()
        self._stacked: Any = None
        self.segments = [] if self.legacy else sorted(folder.glob("seg-*.faiss"))

    @property
    def trained(self) -> bool:
        return not self.legacy and (self.folder / TRAINED).is_file()

    @property
    def last_id(self) -> int:
        """The highest window id indexed (0 when none is)."""
        return max((int(p.stem.split("-")[2]) for p in self.segments), default=0)

    def clear_legacy(self) -> None:
        """Remove an index of the earlier numpy layout (it is rebuilt in this one)."""
        if self.legacy:
            shutil.rmtree(self.folder)
            self.legacy = False

    def train(self, sample: np.ndarray) -> None:
        """Coarse centroids and quantiser from ``sample`` (unit rows), once, before the first segment."""
        faiss = faiss_module()
        sample = np.ascontiguousarray(sample, np.float32)
        lists = min(LISTS, max(1, len(sample) // WINDOWS_PER_LIST_TRAINED))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(sample.shape[1]), sample.shape[1], lists,
                                              faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = TRAIN_ROUNDS
        index.cp.min_points_per_centroid = 1
        index.cp.max_points_per_centroid = WINDOWS_PER_LIST_TRAINED * 8
        index.train(sample)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write(faiss, index, self.folder / TRAINED)

    def append(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Index (ids ascending, ``(n, D)`` float16 unit rows) chunks as new segments; returns windows indexed.
        Memory stays at one segment (:data:`SEGMENT_WINDOWS`)."""
        assert self.trained, "train before appending"
        faiss = faiss_module()
        segment: Any = None
        first = last = added = 0
        for ids, vectors in chunks:
            if segment is None:
                segment, first = faiss.read_index(str(self.folder / TRAINED)), int(ids[0])
            segment.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
            last = int(ids[-1])
            if segment.ntotal >= SEGMENT_WINDOWS:
                added += self._write(faiss, segment, first, last)
                segment = None
        if segment is not None and segment.ntotal:
            added += self._write(faiss, segment, first, last)
        return added

    def _write(self, faiss: Any, segment: Any, first: int, last: int) -> int:
        path = self.folder / f"seg-{first:012d}-{last:012d}.faiss"
        _write(faiss, segment, path)
        self.segments.append(path)
        self._stacked = None
        return int(segment.ntotal)

    def searcher(self) -> Any:
        """One faiss index over every segment's lists (memory-mapped), built once per open index."""
        if self._stacked is None:
            faiss = faiss_module()
            parts = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in self.segments]
            stacked = faiss.read_index(str(self.folder / TRAINED))
            lists = faiss.InvertedListsPtrVector()
            for part in parts:
                lists.push_back(part.invlists)
            joined = faiss.HStackInvertedLists(lists.size(), lists.data())
            stacked.replace_invlists(joined, False)
            stacked.ntotal = sum(int(part.ntotal) for part in parts)
            self._stacked = (stacked, parts, lists, joined)  # the parts own the lists the stack reads
        return self._stacked[0]

    def candidates(self, query: np.ndarray, count: int, probes: int | None = None) -> np.ndarray:
        """Ids of up to ``count`` windows whose codes score highest against unit ``query`` ``(D,)`` in the
        ``probes`` lists nearest it (default by the index's size), best first."""
        if not self.trained or not self.segments:
            return np.zeros(0, np.int64)
        faiss = faiss_module()
        index = self.searcher()
        if np.size(query) != index.d:
            raise WindowShapeError(f"a query vector of {np.size(query)} values does not fit the archive's "
                                   f"{index.d}-dimensional index",
                                   "the query was embedded by another model than these windows': use the bundle "
                                   "of the model that wrote them")
        if probes is None:
            probes = PROBES if index.ntotal <= FEWER_PROBES_ABOVE else LARGE_PROBES
        params = faiss.SearchParametersIVF(nprobe=min(probes, int(index.nlist)))
        _, ids = index.search(np.ascontiguousarray(query, np.float32).reshape(1, -1), int(count), params=params)
        found = ids[0]
        return np.asarray(found[found >= 0], np.int64)

    def nbytes(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.folder.glob("*.faiss"))


def _write(faiss: Any, index: Any, path: Path) -> None:
    temp = path.with_name(TEMP_PREFIX + path.name)
    faiss.write_index(index, str(temp))
    temp.replace(path)
