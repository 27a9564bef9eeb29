"""The archive's previous index (numpy IVF of int8 codes, ``desk/archive/ivf.py`` before faiss), kept as the
baseline of ``benchmarks/ann_candidates.py``: centroids by spherical k-means, one folder of ``.npy`` arrays per
segment, rows grouped by list, probed lists scored on their int8 codes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

TEMP_PREFIX = ".tmp-"

INDEX_DIR = "index"
CENTROIDS = "centroids.npy"
LISTS = 1024
"""Inverted lists (k-means centroids); fewer when the first windows indexed are too few to train them."""
WINDOWS_PER_LIST_TRAINED = 32
TRAIN_SAMPLE = 32_768
KMEANS_ROUNDS = 6
PROBES = 24
"""Lists probed per query: ~2.3 % of the windows are compared by their int8 codes."""
SEGMENT_WINDOWS = 200_000
"""Windows per segment (its codes, 512 B a window, are built in memory: ~100 MB, held twice while sorted)."""
MIN_WINDOWS = 20_000
"""Below this an archive has no index: an exact scan takes milliseconds."""
INT8_MAX = 127


def kmeans(sample: np.ndarray, lists: int, rounds: int = KMEANS_ROUNDS, seed: int = 0) -> np.ndarray:
    """Spherical k-means: ``(n, D)`` unit rows -> ``(lists, D)`` unit centroids (empty lists re-seeded)."""
    rng = np.random.default_rng(seed)
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(rounds):
        nearest = np.argmax(sample @ centroids.T, axis=1)
        order = np.argsort(nearest, kind="stable")
        counts = np.bincount(nearest, minlength=lists)
        sums = np.zeros_like(centroids)
        present = np.flatnonzero(counts)
        sums[present] = np.add.reduceat(sample[order], np.concatenate([[0], np.cumsum(counts)[:-1]])[present])
        empty = counts == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()), replace=False)]
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def int8_codes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n, D)`` float rows -> (``(n, D)`` int8 codes, ``(n,)`` float32 scales: value = code × scale)."""
    rows = np.asarray(vectors, np.float32)
    peak = np.maximum(np.abs(rows).max(axis=1), 1e-12)
    codes = np.rint(rows * (INT8_MAX / peak)[:, None]).astype(np.int8)
    return codes, (peak / INT8_MAX).astype(np.float32)


class IvfIndex:
    """The index folder of one archive: train, append segments, search."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.centroids: np.ndarray | None = (np.load(folder / CENTROIDS) if (folder / CENTROIDS).is_file()
                                             else None)
        self.segments = [_Segment(p) for p in sorted(folder.glob("seg-*")) if p.is_dir()]

    @property
    def last_id(self) -> int:
        """The highest window id indexed (0 when none is)."""
        return max((s.last for s in self.segments), default=0)

    def train(self, sample: np.ndarray) -> None:
        """Centroids from ``sample`` (unit rows), once, before the first segment."""
        lists = min(LISTS, max(1, len(sample) // WINDOWS_PER_LIST_TRAINED))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.centroids = kmeans(np.asarray(sample, np.float32), lists)
        _save(self.folder / CENTROIDS, self.centroids)

    def append(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Index (ids ascending, ``(n, D)`` float16 unit rows) chunks as new segments; returns windows indexed."""
        assert self.centroids is not None, "train before appending"
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        size = added = 0
        for ids, vectors in chunks:
            rows = np.asarray(vectors, np.float32)
            codes, scales = int8_codes(rows)
            pending.append((ids, np.argmax(rows @ self.centroids.T, axis=1), codes, scales))
            size += len(ids)
            if size >= SEGMENT_WINDOWS:
                added += self._write(pending)
                pending, size = [], 0
        return added + (self._write(pending) if pending else 0)

    def _write(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> int:
        assert self.centroids is not None
        ids, lists, codes, scales = (np.concatenate([p[i] for p in parts]) for i in range(4))
        order = np.argsort(lists, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(lists, minlength=len(self.centroids)))])
        final = self.folder / f"seg-{int(ids.min()):012d}-{int(ids.max()):012d}"
        temp = final.with_name(TEMP_PREFIX + final.name)
        temp.mkdir(parents=True, exist_ok=True)
        for name, array in (("ids", ids[order]), ("codes", codes[order]), ("scales", scales[order]),
                            ("offsets", offsets.astype(np.int64))):
            _save(temp / f"{name}.npy", array)
        temp.replace(final)
        self.segments.append(_Segment(final))
        return len(ids)

    def candidates(self, query: np.ndarray, count: int, probes: int = PROBES) -> np.ndarray:
        """Ids of up to ``count`` windows whose codes score highest against unit ``query`` ``(D,)`` in the
        ``probes`` lists nearest it (every segment), best first."""
        if self.centroids is None or not self.segments:
            return np.zeros(0, np.int64)
        query = np.asarray(query, np.float32)
        probed = np.argsort(-(self.centroids @ query))[:probes]
        found_ids, found_scores = [], []
        for segment in self.segments:
            spans = [(int(segment.offsets[p]), int(segment.offsets[p + 1])) for p in probed]
            rows = np.concatenate([np.arange(a, b) for a, b in spans if b > a] or [np.zeros(0, np.int64)])
            if not len(rows):
                continue
            scores = (segment.codes[rows].astype(np.float32) @ query) * segment.scales[rows]
            found_ids.append(segment.ids[rows])
            found_scores.append(scores)
        if not found_ids:
            return np.zeros(0, np.int64)
        ids, scores = np.concatenate(found_ids), np.concatenate(found_scores)
        if len(scores) > count:
            keep = np.argpartition(-scores, count - 1)[:count]
            ids, scores = ids[keep], scores[keep]
        return np.asarray(ids[np.argsort(-scores)], np.int64)

    def nbytes(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.folder.rglob("*.npy"))


class _Segment:
    """One segment's arrays, memory-mapped."""

    def __init__(self, folder: Path) -> None:
        _, first, last = folder.name.split("-")
        self.first, self.last = int(first), int(last)
        self.ids = np.load(folder / "ids.npy", mmap_mode="r")
        self.codes = np.load(folder / "codes.npy", mmap_mode="r")
        self.scales = np.load(folder / "scales.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy")


def _save(path: Path, array: np.ndarray) -> None:
    temp = path.with_name(TEMP_PREFIX + path.name)
    with open(temp, "wb") as handle:
        np.save(handle, array)
    temp.replace(path)
