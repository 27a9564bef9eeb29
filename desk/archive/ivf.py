"""The archive's approximate nearest-neighbour index: a faiss inverted file of 4-bit product codes (fast scan).

Chosen by measurement (``benchmarks/ann_candidates.py``, ``benchmarks/ivf_scale.py``, BENCHMARKS.md *Season
archive*): faiss-cpu's inverted files build several times faster than any graph (usearch, hnswlib, faiss HNSW:
1–2 k windows/s here, against the ~20 k a 60 s collect of a million windows needs), and 64 four-bit codes a window
scanned with faiss's SIMD fast scan answer 6× faster than 8-bit scalar codes at the same recall@10 after the exact
re-rank (1.00 at 1 M windows), in 40 bytes a window instead of 520. Layout under ``<db>.archive/index/``:
``ivfpq.faiss`` (coarse centroids and product quantiser, trained once on a sample of the windows indexed first, no
vectors) and one ``seg-<first id>-<last id>.faiss`` per segment: the same index holding those windows (ids = window
ids), written once and never rewritten. faiss's own ``read_index`` opens every file; a search reads the segments
into memory (40 bytes a window), probes the ``nprobe`` lists nearest the query in each and returns the best
candidates of all, which the store re-ranks exactly on the archive's float16 vectors.

Size switch: an archive that already holds more than :data:`LARGE_ABOVE` windows when its index is first trained
gets tens of thousands of lists (:func:`lists_for`), their centroids trained in two levels and found through an
HNSW graph (faiss ``IVF<n>_HNSW32,PQ64x4fs``): a flat search of 32 768 centroids per window indexed costs ~4× the
graph's. An index of the earlier layouts is searched as it is (faiss IVF-SQ8 ``trained.faiss``: its segments
memory-mapped and stacked) or not at all (numpy ``centroids.npy``), and rebuilt in this one by the next collect.
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
CODEBOOK = "ivfpq.faiss"
"""The trained, empty index of this layout (coarse centroids, product quantiser)."""
TRAINED = "trained.faiss"
"""The earlier faiss layout's trained index (IVF-SQ8): searched memory-mapped, rebuilt by the next collect."""
LEGACY = "centroids.npy"
"""The earlier numpy index's centroids: not searched, rebuilt by the next collect."""
CODES = "PQ64x4fs"
"""64 sub-vectors of 8 dimensions, 4 bits each, fast-scan layout: 32 bytes of codes + 8 of id a window."""
LISTS = 1024
"""Inverted lists (coarse centroids) up to :data:`LARGE_ABOVE` windows; fewer when too few windows train them."""
WINDOWS_PER_LIST_TRAINED = 32
TRAIN_SAMPLE = 32_768
"""Windows the index is trained on (float32 in memory: 64 MB); :data:`LARGE_SAMPLE` for a large archive."""
TRAIN_ROUNDS = 8
LARGE_ABOVE = 16_000_000
"""Windows in the archive at training above which the lists are many more (:func:`lists_for`)."""
WINDOWS_PER_LARGE_LIST = 4_096
MAX_LISTS = 65_536
LARGE_SAMPLE = 262_144
"""Training windows of a large index (512 MB as float32: a large archive's machine has it)."""
HNSW_LINKS = 32
HNSW_SEARCH = 64
"""Coarse centroids visited (graph search breadth) per window assigned or query probed in a large index."""
PROBES = 16
"""Lists probed per query: at 10 M windows in 1 024 lists, ~160 000 codes compared by fast scan."""
SEGMENT_WINDOWS = 1_000_000
"""Windows per segment, held in memory while it is built: 40 MB of codes and ids."""
MIN_WINDOWS = 20_000
"""Below this an archive has no index: an exact scan takes milliseconds."""


def faiss_module() -> Any:
    """faiss (faiss-cpu, the ``desk`` extra), imported on first use."""
    import faiss

    return faiss


def lists_for(windows: int, sample: int) -> int:
    """Coarse lists for an index first trained when the archive holds ``windows`` (``sample`` training rows)."""
    if windows <= LARGE_ABOVE:
        return min(LISTS, max(1, sample // WINDOWS_PER_LIST_TRAINED))
    return min(MAX_LISTS, 1 << int(np.ceil(np.log2(windows / WINDOWS_PER_LARGE_LIST))))


def training_rows(windows: int) -> int:
    """Windows sampled to train an index first built when the archive holds ``windows``."""
    return min(windows, LARGE_SAMPLE if windows > LARGE_ABOVE else TRAIN_SAMPLE)


class IvfIndex:
    """The index folder of one archive: train, append segments, search."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.layout = "numpy" if (folder / LEGACY).is_file() else "sq8" if (folder / TRAINED).is_file() else "pq"
        self._searcher: Any = None
        self.segments = [] if self.layout == "numpy" else sorted(folder.glob("seg-*.faiss"))

    @property
    def trained(self) -> bool:
        return self.layout == "pq" and (self.folder / CODEBOOK).is_file()

    @property
    def last_id(self) -> int:
        """The highest window id indexed (0 when none is)."""
        return max((int(p.stem.split("-")[2]) for p in self.segments), default=0)

    def clear_legacy(self) -> bool:
        """Remove an index of an earlier layout (it is rebuilt in this one); True when there was one."""
        if self.layout == "pq":
            return False
        shutil.rmtree(self.folder)
        self.layout, self.segments, self._searcher = "pq", [], None
        return True

    def train(self, sample: np.ndarray, windows: int | None = None) -> None:
        """Coarse centroids and product quantiser from ``sample`` (unit rows), once, before the first segment;
        ``windows``: the archive's size now (default the sample's), which sets the lists (:func:`lists_for`)."""
        faiss = faiss_module()
        sample = np.ascontiguousarray(sample, np.float32)
        dim = sample.shape[1]
        windows = len(sample) if windows is None else windows
        lists = lists_for(windows, len(sample))
        if windows <= LARGE_ABOVE:
            index = faiss.index_factory(dim, f"IVF{lists},{CODES}", faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = TRAIN_ROUNDS
            index.cp.min_points_per_centroid = 1
            index.cp.max_points_per_centroid = WINDOWS_PER_LIST_TRAINED * 8
        else:
            from faiss.contrib.clustering import two_level_clustering

            index = faiss.index_factory(dim, f"IVF{lists}_HNSW{HNSW_LINKS},{CODES}", faiss.METRIC_INNER_PRODUCT)
            centroids, _ = two_level_clustering(sample, int(np.sqrt(lists)), lists, clustering_niter=TRAIN_ROUNDS,
                                                spherical=True)
            quantizer = faiss.downcast_index(index.quantizer)
            quantizer.hnsw.efSearch = HNSW_SEARCH
            quantizer.add(np.ascontiguousarray(centroids, np.float32))
        index.train(sample)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write(faiss, index, self.folder / CODEBOOK)

    def append(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Index (ids ascending, ``(n, D)`` float16 unit rows) chunks as new segments; returns windows indexed.
        Memory stays at one segment (:data:`SEGMENT_WINDOWS`) and one chunk as float32."""
        assert self.trained, "train before appending"
        faiss = faiss_module()
        segment: Any = None
        first = last = added = 0
        for ids, vectors in chunks:
            if segment is None:
                segment, first = faiss.read_index(str(self.folder / CODEBOOK)), int(ids[0])
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
        self._searcher = None
        return int(segment.ntotal)

    def searcher(self) -> list[Any]:
        """The faiss indexes a query searches, opened once per open index: this layout's segments each read into
        memory (faiss 1.15's ``merge_from`` corrupts the heap on fast-scan lists, so they are not joined), the
        IVF-SQ8 layout's lists memory-mapped and stacked into one."""
        if self._searcher is None:
            faiss = faiss_module()
            if self.layout == "sq8":
                self._searcher = _stacked(faiss, self.folder / TRAINED, self.segments)
            else:
                self._searcher = ([faiss.read_index(str(path)) for path in self.segments],)
        return self._searcher[0] if self.layout == "pq" else [self._searcher[0]]

    def candidates(self, query: np.ndarray, count: int, probes: int | None = None) -> np.ndarray:
        """Ids of up to ``count`` windows whose codes score highest against unit ``query`` ``(D,)`` in the
        ``probes`` lists nearest it (default :data:`PROBES`), best first."""
        if self.layout == "numpy" or not self.segments:
            return np.zeros(0, np.int64)
        faiss = faiss_module()
        indexes = self.searcher()
        if np.size(query) != indexes[0].d:
            raise WindowShapeError(f"a query vector of {np.size(query)} values does not fit the archive's "
                                   f"{indexes[0].d}-dimensional index",
                                   "the query was embedded by another model than these windows': use the bundle "
                                   "of the model that wrote them")
        params = faiss.SearchParametersIVF(nprobe=min(probes or PROBES, int(indexes[0].nlist)))
        row = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        found = [index.search(row, int(count), params=params) for index in indexes]
        scores = np.concatenate([f[0][0] for f in found])
        ids = np.concatenate([f[1][0] for f in found])
        best = np.argsort(-scores, kind="stable")[: int(count)]
        return np.asarray(ids[best][ids[best] >= 0], np.int64)

    def nbytes(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.folder.glob("*.faiss"))


def _stacked(faiss: Any, trained: Path, segments: list[Path]) -> tuple[Any, ...]:
    """An IVF-SQ8 index of the earlier layout: the segments' lists memory-mapped and stacked under its trained
    index (the tuple keeps the parts that own the lists alive)."""
    parts = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in segments]
    stacked = faiss.read_index(str(trained))
    lists = faiss.InvertedListsPtrVector()
    for part in parts:
        lists.push_back(part.invlists)
    joined = faiss.HStackInvertedLists(lists.size(), lists.data())
    stacked.replace_invlists(joined, False)
    stacked.ntotal = sum(int(part.ntotal) for part in parts)
    return stacked, parts, lists, joined


def _write(faiss: Any, index: Any, path: Path) -> None:
    temp = path.with_name(TEMP_PREFIX + path.name)
    faiss.write_index(index, str(temp))
    temp.replace(path)
