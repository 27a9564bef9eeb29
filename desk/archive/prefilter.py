"""Optional search prefilter: one bit per dimension (the sign), Hamming distance, then an exact re-rank.

Each shard gets ``.codes.npy`` beside it (``(N, D/8)`` uint8, 64 bytes a window at 512-d), written at ingest.
A query's code is compared with every code by XOR and popcount (a few bytes a window instead of 1 KiB), the
best ``candidates`` go on to the exact cosine from the scan copy. Recall against the exact scan is reported by
``benchmarks/archive_season.py``; the exact scan stays the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desk.archive.windows import normalised

if TYPE_CHECKING:
    from desk.archive.store import DuckShardStore

CODES_SUFFIX = ".codes.npy"
CANDIDATES_PER_HIT = 100
"""Windows re-ranked exactly per hit asked for."""
MIN_CANDIDATES = 2_000


def codes_path(shard: Path) -> Path:
    return shard.with_suffix(CODES_SUFFIX)


FLOAT16_SIGN = np.uint16(0x8000)


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """``(N, D)`` float16/float32 -> ``(N, D/8)`` uint8: bit set where the sign bit is clear (value >= +0)."""
    vectors = np.asarray(vectors)
    # float16: integer compare on the bits (numpy's float16 arithmetic is slow)
    positive = vectors.view(np.uint16) < FLOAT16_SIGN if vectors.dtype == np.float16 else ~np.signbit(vectors)
    return np.packbits(positive, axis=1)


def write_codes(shard: Path, vectors: np.ndarray) -> None:
    target = codes_path(shard)
    temp = target.with_name(".tmp-" + target.name)
    with open(temp, "wb") as handle:
        np.save(handle, binary_codes(vectors))
    temp.replace(target)


def hamming(codes: np.ndarray, query_code: np.ndarray) -> np.ndarray:
    """Bits differing between each row of ``codes`` ``(N, B)`` uint8 and ``query_code`` ``(B,)``."""
    words = codes.shape[1] // 8
    if words * 8 == codes.shape[1]:
        xor = np.bitwise_xor(codes.view(np.uint64), query_code.view(np.uint64))
    else:
        xor = np.bitwise_xor(codes, query_code)
    return np.bitwise_count(xor).sum(axis=1, dtype=np.int32)


def prefiltered_top(store: DuckShardStore, query: np.ndarray, top: int, where: str,
                    params: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Like the exact :meth:`desk.archive.store.DuckShardStore.nearest`, over Hamming-nearest candidates only."""
    from desk.archive.store import shards

    con, root = store.con, store.root
    query_code = binary_codes(query.reshape(1, -1))[0]
    keep = max(MIN_CANDIDATES, CANDIDATES_PER_HIT * top)
    found = shards(con, where, params)
    best: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (distance, shard index, row)
    for number, (shard, rows, _) in enumerate(found):
        path = codes_path(root / shard)
        # a shard archived before codes existed: derive them from its scan copy
        codes = np.load(path, mmap_mode="r") if path.is_file() else binary_codes(store.shard(shard).gather(
            np.arange(store.shard(shard).rows)))
        distance = hamming(np.asarray(codes[rows]), query_code)
        local_rows = np.arange(len(codes))[rows]
        if len(distance) > keep:
            part = np.argpartition(distance, keep - 1)[:keep]
            distance, local_rows = distance[part], local_rows[part]
        best.append((distance, np.full(len(distance), number), local_rows))
        distances = np.concatenate([b[0] for b in best])
        if len(distances) > keep:
            part = np.argpartition(distances, keep - 1)[:keep]
            merged = [np.concatenate([b[i] for b in best])[part] for i in range(3)]
            best = [(merged[0], merged[1], merged[2])]
    ids_out, scores_out = [], []
    shard_of = np.concatenate([b[1] for b in best]) if best else np.zeros(0, np.int64)
    row_of = np.concatenate([b[2] for b in best]) if best else np.zeros(0, np.int64)
    for number in np.unique(shard_of):
        shard, rows, ids = found[number]
        picked = np.sort(row_of[shard_of == number])
        shard_rows = store.shard(shard).rows
        scores_out.append(normalised(store.shard(shard).gather(picked)) @ query)
        lookup = dict(zip(np.arange(shard_rows)[rows].tolist(), ids.tolist()))
        ids_out.append(np.array([lookup[r] for r in picked.tolist()], np.int64))
    if not ids_out:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    all_ids, all_scores = np.concatenate(ids_out), np.concatenate(scores_out)
    order = np.lexsort((all_ids, -all_scores))[:top]
    return all_ids[order], all_scores[order]
