"""Arrow columns become the numpy arrays pyarrow's ``to_numpy`` makes, without importing pandas: ``logs rescore``
no longer pays pandas' ≈ 0.7 s import."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from desk.archive.arrow_numpy import column_numpy
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}

STAMPS = np.array([1_714_000_000_000_000, 0, -5, 7], "datetime64[us]")
COLUMNS = {
    "int64": pa.array(np.arange(10, dtype=np.int64)),
    "int32 with nulls": pa.array([1, None, 3, 4], pa.int32()),
    "uint8": pa.array(np.arange(5, dtype=np.uint8)),
    "float32 with nulls": pa.array([1.5, None, 2.5], pa.float32()),
    "float16": pa.array(np.ones(3, np.float16)),
    "timestamp": pa.array(STAMPS),
    "timestamp with nulls and a zone": pa.array(STAMPS, pa.timestamp("us", "UTC"), mask=np.array([0, 1, 0, 1], bool)),
    "duration": pa.array(np.array([1, 2], "timedelta64[ms]")),
    "date32": pa.array([datetime.date(2024, 4, 1), None], pa.date32()),
    "bool": pa.array([True, False, True]),
    "bool with nulls": pa.array([True, None, False]),
    "string with nulls": pa.array(["a", None, "c"]),
    "dictionary": pa.array(["x", "y", "x"]).dictionary_encode(),
}


@pytest.mark.parametrize("name", list(COLUMNS))
def test_a_column_is_what_pyarrow_makes_of_it(name: str) -> None:
    array = COLUMNS[name]
    cases = {"array": array, "slice": array.slice(1), "chunked": pa.chunked_array([array.slice(0, 1), array.slice(1)]),
             "empty": array.slice(0, 0)}
    for case, column in cases.items():
        expected, found = column.to_numpy(zero_copy_only=False), column_numpy(column)
        assert found.dtype == expected.dtype, (case, found.dtype, expected.dtype)
        np.testing.assert_array_equal(found, expected, err_msg=case)


def test_logs_rescore_does_not_import_pandas(tmp_path: Path) -> None:
    from desk.archive.windows import WindowBatch, open_store
    from tests.desk.archive.test_rescore_memory import RATE, synthetic_bundle, unit_rows

    bundle, labels, space = synthetic_bundle(tmp_path / "bundle", 20)
    windows = 50
    starts = np.arange(windows, dtype=np.int64) * 5 * RATE
    with open_store(tmp_path / "season.duckdb", writable=True) as store:
        store.insert(WindowBatch("a.emb", "marsh-01", "marsh", "boot-1", RATE, space, None, "/cards/marsh-01",
                                 np.zeros(windows, np.int32), starts, starts + 10 * RATE,
                                 1_714_000_000_000_000 + starts * 1_000_000 // RATE, ["ntp"] * windows,
                                 unit_rows(windows, 2).astype(np.float16)))
    for threshold in ([], ["--threshold", "-1"]):  # top-k rows, and events through the detector
        out = tmp_path / f"out{len(threshold)}"
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge", "logs", "rescore", "--db",
                               str(tmp_path / "season.duckdb"), "--bundle", str(bundle), "--labels", str(labels),
                               "--out", str(out), "--top-k", "3", "--format", "csv,raven,birdnet,occupancy",
                               *threshold], capture_output=True, text=True, cwd=REPO, env=ENV, check=True)
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "desk.archive.rescore" in imported and "pyarrow" in imported  # the import log is complete
        assert not {name for name in imported if name.split(".")[0] == "pandas"}
        assert (out / "detections.csv").is_file()
