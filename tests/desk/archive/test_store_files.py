"""The archive's file listing (``WindowStore.files``) for a reader elsewhere: small, and read as the scan reads."""

from __future__ import annotations

import pickle
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from desk.archive.windows import WindowBatch, WindowFilter, normalised, open_store, read_rows, top_of

RATE = 48_000
DIM = 64


def batch(unit: str, boot: str, count: int, seed: int) -> WindowBatch:
    vectors = normalised(np.random.default_rng(seed).standard_normal((count, DIM))).astype(np.float16)
    starts = np.arange(count, dtype=np.int64) * 5 * RATE
    utc = int(datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp() * 1e6) + starts * 1_000_000 // RATE
    return WindowBatch(segment=f"{unit}.emb", unit_id=unit, deployment_id="marsh", boot_id=boot,
                       sample_rate=RATE, model_sha256="space", source_path=None, card=f"/cards/{unit}",
                       stream=np.zeros(count, np.int32), start_sample=starts, end_sample=starts + 10 * RATE,
                       start_utc_us=utc, clock_sync=["ntp"] * count, vectors=vectors)


def test_the_file_listing_holds_no_id_array_and_reads_as_the_scan(tmp_path: Path) -> None:
    one, two = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    for db, seed in ((one, 1), (two, 2)):  # two seasons of the same units
        with open_store(db, writable=True) as store:
            store.insert(batch("marsh-01", f"boot-{seed}", 3_000, seed))
            store.insert(batch("marsh-02", f"boot-{seed}", 2_000, seed + 10))
    query = normalised(np.random.default_rng(5).standard_normal((1, DIM)))[0]
    for dbs in ([one], [one, two]):
        with open_store(dbs) as store:
            files = store.files()
            # a run of ids is a range: the listing of a 10 M archive is not 80 MB of ids, nor is what Ray ships
            assert [type(f.window_ids) for f in files] == [range] * len(files)
            assert len(pickle.dumps(files)) < 500 * len(files)
            listed = np.concatenate([np.asarray(f.window_ids) for f in files])
            assert np.array_equal(listed, store.match())
            scanned = top_of(store.scan(query.reshape(-1, 1)), 10)
            read = top_of([chunk for f in files for chunk in read_rows(f, query.reshape(-1, 1))], 10)
            assert np.array_equal(scanned[0], read[0]) and np.array_equal(scanned[1], read[1])
            unit = store.files(WindowFilter(units=("marsh-02",)))
            assert sum(len(f.window_ids) for f in unit) == 2_000 * len(dbs)
