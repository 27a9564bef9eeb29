"""Approximate nearest-neighbour candidates for the season archive, measured side by side.

    python benchmarks/ann_candidates.py --windows 100000,1000000 --workdir /tmp/ann-bench

Candidates: the archive's own numpy IVF (``desk/archive/ivf.py``), faiss-cpu (IVF-SQ8, IVF-PQ, HNSW-SQ8), usearch
(i8 and f16, batch ``add`` on every core) and hnswlib. Each is built in its own process from the same float16
vectors (memory-mapped ``.npy``; the build's own memory is the peak of its anonymous RSS, sampled every 20 ms),
and reported with build windows/s, index bytes per window, warm query ms (p50/p95 of single queries, the exact
re-rank of its candidates on the float16 vectors included, as the archive does it) and recall@10 against the
exact top 10, without a filter and with a time-range filter (the first half of the season) applied exactly: the
candidates are over-fetched by total/matched and the ones outside the filter dropped before the re-rank.

Data: (a) ``synthetic``, the season mixture of ``benchmarks/archive_season.py`` (200 species clusters, each with
its own few directions of variation — not uniform random vectors), and (b) ``real``, the recordings of
``../shared/audio`` cut into 10 s windows every ``--hop`` seconds and embedded by the full-size model with random
weights (default ``ClapConfig``, fp32 ONNX audio tower; ``--bundle`` or built here with the export path) — a few
hundred windows, reported as measured.

faiss-cpu and usearch come with the ``desk`` extra; hnswlib is for this benchmark only (``pip install hnswlib``;
a candidate whose library is missing is reported FAILED and the others still run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.archive_season import season_vectors  # noqa: E402
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

K = 10
CANDIDATES = 400
"""Candidates every index hands to the exact re-rank (the archive's MIN_CANDIDATES)."""
QUERIES = 200
CHUNK = 20_000
"""Windows per ``add`` call (collect indexes page by page)."""
DRAW = 2_000
"""Rows per draw of the season mixture (a draw needs ~12 KB a row)."""
THREADS = os.cpu_count() or 1


class PeakAnon:
    """Peak anonymous RSS (MB) of this process while in the ``with`` block (mapped data files excluded)."""

    def __enter__(self) -> PeakAnon:
        self.peak = self.base = _anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _anon_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _anon_mb())


def _anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- candidates: build(vectors, folder) -> search


Search = Callable[[np.ndarray, int], np.ndarray]


def built_ivf(ivf: Any, vectors: np.ndarray, folder: Path) -> Any:
    """Train ``ivf.IvfIndex`` on a sample, append every window in chunks (ids from 1), reopen it memory-mapped."""
    index = ivf.IvfIndex(folder)
    step = max(1, len(vectors) // ivf.TRAIN_SAMPLE)
    index.train(np.asarray(vectors[::step][: ivf.TRAIN_SAMPLE], np.float32))
    index.append((np.arange(a + 1, min(a + CHUNK, len(vectors)) + 1), vectors[a : a + CHUNK])
                 for a in range(0, len(vectors), CHUNK))
    return ivf.IvfIndex(folder)


def archive_index(vectors: np.ndarray, folder: Path) -> Search:
    """The archive's index as ``collect`` builds it (``desk/archive/ivf.py``: faiss IVF-SQ8 in segments)."""
    from desk.archive import ivf

    index = built_ivf(ivf, vectors, folder)
    probes = int(os.environ["ANN_PROBES"]) if "ANN_PROBES" in os.environ else None
    return lambda q, n: index.candidates(q, n, probes) - 1


def numpy_index(vectors: np.ndarray, folder: Path) -> Search:
    """The previous index (numpy IVF, int8 codes): the baseline."""
    from benchmarks import numpy_ivf as ivf

    index = built_ivf(ivf, vectors, folder)
    return lambda q, n: index.candidates(q, n) - 1


def _faiss_train_add(index: Any, vectors: np.ndarray) -> None:
    step = max(1, len(vectors) // 32_768)
    index.train(np.asarray(vectors[::step][:32_768], np.float32))
    for a in range(0, len(vectors), CHUNK):
        index.add(np.asarray(vectors[a : a + CHUNK], np.float32))


def _faiss_saved(index: Any, folder: Path, mmap: bool) -> Any:
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(folder / "index.faiss"))
    return faiss.read_index(str(folder / "index.faiss"), faiss.IO_FLAG_MMAP if mmap else 0)


def faiss_ivf(kind: str, lists: int, probes: int) -> Callable[[np.ndarray, Path], Search]:
    def build(vectors: np.ndarray, folder: Path) -> Search:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        d = vectors.shape[1]
        quantizer = faiss.IndexFlatIP(d)
        if kind == "sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, lists, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, lists, 64, 8, faiss.METRIC_INNER_PRODUCT)
        _faiss_train_add(index, vectors)
        index = _faiss_saved(index, folder, mmap=True)
        index.nprobe = probes
        return lambda q, n: index.search(q.reshape(1, -1), n)[1][0]
    return build


def faiss_hnsw_sq(vectors: np.ndarray, folder: Path) -> Search:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    _faiss_train_add(index, vectors)
    index = _faiss_saved(index, folder, mmap=False)
    index.hnsw.efSearch = 96
    return lambda q, n: index.search(q.reshape(1, -1), n)[1][0]


def usearch_index(dtype: str) -> Callable[[np.ndarray, Path], Search]:
    def build(vectors: np.ndarray, folder: Path) -> Search:
        from usearch.index import Index

        index = Index(ndim=vectors.shape[1], metric="ip", dtype=dtype, connectivity=16, expansion_add=64,
                      expansion_search=96)
        for a in range(0, len(vectors), CHUNK):
            part = np.asarray(vectors[a : a + CHUNK], np.float32)
            index.add(np.arange(a, a + len(part)), part, threads=THREADS)
        folder.mkdir(parents=True, exist_ok=True)
        index.save(str(folder / "index.usearch"))
        viewed = Index.restore(str(folder / "index.usearch"), view=True)
        return lambda q, n: np.asarray(viewed.search(q, n).keys, np.int64)
    return build


def hnswlib_index(vectors: np.ndarray, folder: Path) -> Search:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), ef_construction=64, M=16)
    for a in range(0, len(vectors), CHUNK):
        index.add_items(np.asarray(vectors[a : a + CHUNK], np.float32), np.arange(a, min(a + CHUNK, len(vectors))),
                        num_threads=THREADS)
    folder.mkdir(parents=True, exist_ok=True)
    index.save_index(str(folder / "index.hnsw"))
    index.set_ef(max(CANDIDATES, 96))
    return lambda q, n: np.asarray(index.knn_query(q.reshape(1, -1), k=n)[0][0], np.int64)


def lists_for(windows: int) -> int:
    return int(min(4096, max(8, windows // 256)))


def candidates_for(windows: int) -> dict[str, Callable[[np.ndarray, Path], Search]]:
    lists = lists_for(windows)
    probes = max(4, lists // 40)
    return {"archive-faiss-ivf1024-sq8-segments": archive_index, "numpy-ivf1024-int8": numpy_index,
            f"faiss-ivf{lists}-sq8": faiss_ivf("sq8", lists, probes),
            f"faiss-ivf{lists}-pq64": faiss_ivf("pq", lists, probes), "faiss-hnsw16-sq8": faiss_hnsw_sq,
            "usearch-i8": usearch_index("i8"), "usearch-f16": usearch_index("f16"), "hnswlib-f32": hnswlib_index}


# ---------------------------------------------------------------- one candidate, in its own process


def measure(name: str, data: Path, truth: Path, folder: Path) -> dict[str, float]:
    vectors = np.load(data, mmap_mode="r")
    found = np.load(truth)
    queries, exact, exact_half = found["queries"], found["exact"], found["exact_half"]
    total = len(vectors)
    build = candidates_for(total)[name]
    started = time.perf_counter()
    with PeakAnon() as memory:
        search = build(vectors, folder)
    built = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    half = total // 2

    def query(q: np.ndarray, where_half: bool) -> np.ndarray:
        wanted = CANDIDATES * (2 if where_half else 1)
        ids = search(q, min(wanted, total))
        ids = ids[ids >= 0]
        if where_half:
            ids = ids[ids < half][:CANDIDATES]
        ids = np.sort(ids)
        scores = np.asarray(vectors[ids], np.float32) @ q
        return ids[np.argsort(-scores, kind="stable")[:K]]

    for q in queries[:5]:
        query(q, False)
    times, recalls, recalls_half = [], [], []
    for i, q in enumerate(queries):
        started = time.perf_counter()
        top = query(q, False)
        times.append(time.perf_counter() - started)
        recalls.append(len(set(top.tolist()) & set(exact[i].tolist())) / K)
        recalls_half.append(len(set(query(q, True).tolist()) & set(exact_half[i].tolist())) / K)
    return {"build_windows_per_s": total / built, "build_s": built, "build_peak_anon_mb": memory.peak - memory.base,
            "bytes_per_window": size / total, "query_ms_p50": 1000 * float(np.percentile(times, 50)),
            "query_ms_p95": 1000 * float(np.percentile(times, 95)), "recall10": float(np.mean(recalls)),
            "recall10_time_filter": float(np.mean(recalls_half))}


# ---------------------------------------------------------------- data


def season_chunks(windows: int, chunk: int = CHUNK, draw: int = DRAW) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids from 1, float16 rows) of ``windows`` season-mixture windows, ``chunk`` at a time, drawn ``draw`` rows
    at a time; the same every call (seed 0)."""
    rng = np.random.default_rng(0)
    for first in range(0, windows, chunk):
        count = min(chunk, windows - first)
        rows = np.concatenate([season_vectors(rng, min(draw, count - a)).astype(np.float16)
                               for a in range(0, count, draw)])
        yield np.arange(first + 1, first + count + 1, dtype=np.int64), rows


def synthetic(path: Path, windows: int) -> None:
    out = np.lib.format.open_memmap(path, "w+", np.float16, (windows, 512))
    for ids, rows in season_chunks(windows, 100_000, 100_000):
        out[ids[0] - 1 : ids[-1]] = rows
    out.flush()


def real(path: Path, bundle: Path, audio: Path, hop_s: float) -> None:
    """Every 10 s window, every ``hop_s`` seconds, of every recording under ``audio``, through the bundle's fp32
    audio tower."""
    import soundfile as sf

    from edge.audio.files import read_file
    from edge.audio.windowing import Window
    from edge.model.backends import create_backend
    from edge.model.bundle import open_bundle
    from edge.model.frontend_stream import StreamingLogMel

    opened = open_bundle(bundle)
    rate = opened.manifest.frontend.sampling_rate
    length = rate * opened.manifest.frontend.max_length_s
    frontend = StreamingLogMel(opened.manifest.frontend)
    backend = create_backend(opened, precision="fp32")
    rows = []
    for file in sorted(p for p in audio.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg")):
        try:
            sf.info(str(file))
        except RuntimeError:
            continue
        samples = read_file(file, rate)
        starts = range(0, max(1, len(samples) - length // 2), int(hop_s * rate))
        windows = [Window(0, samples[s : s + length]) for s in starts]
        for a in range(0, len(windows), 8):
            rows.append(np.asarray(backend.embed(frontend.batch(windows[a : a + 8])), np.float32))
    vectors = np.concatenate(rows)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(path, vectors.astype(np.float16))


def ground_truth(data: Path, out: Path, real_data: bool) -> None:
    vectors = np.load(data, mmap_mode="r")
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(vectors), QUERIES // 2)
    noisy = np.asarray(vectors[np.sort(picks)], np.float32) + 0.02 * rng.standard_normal((len(picks), 512))
    fresh = (season_vectors(rng, QUERIES - len(picks)) if not real_data else
             np.asarray(vectors[rng.integers(0, len(vectors), QUERIES - len(picks))], np.float32)
             + 0.05 * rng.standard_normal((QUERIES - len(picks), 512)))
    queries = np.concatenate([noisy, fresh]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    half = len(vectors) // 2
    exact, exact_half = _top(vectors, queries, 0, len(vectors)), _top(vectors, queries, 0, half)
    np.savez(out, queries=queries, exact=exact, exact_half=exact_half)


def _top(vectors: np.ndarray, queries: np.ndarray, first: int, end: int) -> np.ndarray:
    """``(Q, K)`` row numbers of the exact top ``K`` of rows ``first:end`` per query (ties by row)."""
    best_rows = np.zeros((len(queries), 0), np.int64)
    best = np.zeros((len(queries), 0), np.float32)
    for a in range(first, end, 100_000):
        b = min(a + 100_000, end)
        scores = np.concatenate([best, (np.asarray(vectors[a:b], np.float32) @ queries.T).T], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(a, b), (len(queries), b - a))], axis=1)
        keep = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        best, best_rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)
    order = np.lexsort((best_rows, -best), axis=1)
    return np.take_along_axis(best_rows, order, 1)


def stacked_latency(folder: Path, copies: int, probes: int) -> dict[str, float]:
    """Query ms of an archive index whose segments are stacked ``copies`` times: the codes a query of an archive
    ``copies`` times larger scans (same lists, same probes). Latency only: the copies repeat the same windows."""

    from desk.archive import ivf

    index = ivf.IvfIndex(folder)
    index.segments = index.segments * copies
    rng = np.random.default_rng(3)
    queries = season_vectors(rng, 100)
    times = []
    for round_ in range(2):
        for q in queries:
            started = time.perf_counter()
            index.candidates(q, CANDIDATES, probes)
            if round_:
                times.append(time.perf_counter() - started)
    return {"windows": sum(int(s.ntotal) for s in index.searcher()), "segments": len(index.segments), "probes": probes,
            "query_ms_p50": 1000 * float(np.percentile(times, 50)),
            "query_ms_p95": 1000 * float(np.percentile(times, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", default="100000,1000000", help="synthetic sizes, comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ann-bench"))
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--real", action="store_true", help="also the real recordings through the full-size model")
    parser.add_argument("--bundle", type=Path, help="full-size bundle (built here with the export path if absent)")
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--hop", type=float, default=1.0, help="real: seconds between window starts")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="leave the built indexes in WORKDIR/built")
    parser.add_argument("--stack", type=Path, metavar="INDEX_DIR",
                        help="only: latency of this archive index with its segments stacked --copies times")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--probes", type=int, help="archive candidate: lists probed (default: by the index's size)")
    parser.add_argument("--child", nargs=3, metavar=("NAME", "DATA", "TRUTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.real:
        args.audio = args.audio or shared_audio()
    if args.probes:
        os.environ["ANN_PROBES"] = str(args.probes)
    if args.stack:
        from desk.archive.ivf import PROBES

        for probes in (8, PROBES):
            for copies in (1, args.copies):
                result = {**stacked_latency(args.stack, copies, probes), "load": os.getloadavg()[0]}
                print(json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)
        return
    if args.child:
        name, data, truth = args.child
        print(json.dumps(measure(name, Path(data), Path(truth), args.workdir / "built" / name)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    sets: list[tuple[str, Path]] = []
    for windows in (int(w) for w in args.windows.split(",") if w):
        path = args.workdir / f"synthetic-{windows}.npy"
        if not path.is_file():
            synthetic(path, windows)
        sets.append((f"synthetic-{windows}", path))
    if args.real:
        path = args.workdir / f"real-hop{args.hop:g}.npy"
        if not path.is_file():
            real(path, args.bundle or full_size_bundle(args.workdir, args.audio), args.audio, args.hop)
        sets.append((f"real-{len(np.load(path, mmap_mode='r'))}", path))
    report: dict[str, Any] = {"load_before": os.getloadavg()}
    for label, path in sets:
        truth = path.with_suffix(".truth.npz")
        if not truth.is_file():
            ground_truth(path, truth, label.startswith("real"))
        names = [n for n in candidates_for(len(np.load(path, mmap_mode="r")))
                 if not args.only or any(n.startswith(o) for o in args.only.split(","))]
        for name in names:
            work = args.workdir / "built"
            subprocess.run(["rm", "-rf", str(work / name)], check=True)
            done = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--child", name,
                                   str(path), str(truth)], capture_output=True, text=True, cwd=REPO)
            if not args.keep:
                subprocess.run(["rm", "-rf", str(work / name)], check=True)
            if done.returncode:
                print(label, name, "FAILED", done.stderr[-2000:], flush=True)
                continue
            result = {**json.loads(done.stdout.strip().splitlines()[-1]), "load": os.getloadavg()[0]}
            report[f"{label}/{name}"] = result
            print(label, name, json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def full_size_bundle(workdir: Path, audio: Path) -> Path:
    """The full-size model with random weights (default ``ClapConfig``), exported to an fp32 bundle."""
    from export.checkpoint import load_checkpoint
    from export.onnx_bundle import export_fp32_bundle
    from export.synthetic import build_checkpoint

    bundle = workdir / "bundle-full"
    if not (bundle / "manifest.json").is_file():
        export_fp32_bundle(load_checkpoint(str(build_checkpoint(workdir / "checkpoint-full", "full"))), bundle, audio)
    return bundle


if __name__ == "__main__":
    main()
