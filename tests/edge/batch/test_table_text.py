"""The column path of the table writer makes the very bytes of the row path (``logs rescore`` writes a season's
million rows through it; ``analyze`` writes row by row)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from edge.batch.table_text import SelectionColumns, digits, fixed, general6, iso_utc, raven_utc, rows
from edge.batch.tables import DetectionsCsv, RecordingTables, selections

EDGES = [0.0, -0.0, 0.0625, -0.0625, 0.125, 0.0005, 0.00049999999, 2.5e-4, 1e-5, 1e-4, 9.999995, 99999.95, 999999.5,
         123456.5, 100000.0, 1e6, 1e16, 1e300, 5e-324, 2.675, 1.0005, 16.0, -16.23455, float("nan"), float("inf"),
         float("-inf"), 0.1, 1 / 3, 2**40 / 1000, 2**53]


def texts(column: list, n: int) -> list[str]:
    data, offsets = rows([column], ",", "")
    return [bytes(data[offsets[i] : offsets[i + 1]]).decode("utf-8") for i in range(n)]


def values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mantissa = rng.standard_normal(100_000)
    spread = mantissa * 10.0 ** rng.integers(-9, 12, len(mantissa))
    scores = (rng.standard_normal(100_000) * 20).astype(np.float32).astype(np.float64)  # what rescore writes
    samples = rng.integers(0, 2**40, 100_000) / rng.choice([8_000, 22_050, 44_100, 48_000, 96_000], 100_000)
    return np.concatenate([EDGES, spread, scores, samples, np.round(spread, 4) + 0.0005])


def test_fixed_and_general_equal_python_formatting() -> None:
    x = values(0)
    for spec, column in ((".3f", fixed(x, 3)), (".4f", fixed(x, 4)), (".6g", general6(x))):
        want = [format(float(v), spec) for v in x]
        got = texts(column, len(x))
        wrong = [(float(v), w, g) for v, w, g in zip(x, want, got) if w != g]
        assert not wrong, (spec, wrong[:5])


def test_times_equal_isoformat_and_raven_strftime() -> None:
    rng = np.random.default_rng(1)
    us = np.concatenate([rng.integers(0, 4_102_444_800_000_000, 50_000), [0, 951_782_400_000_000, -1_000_000],
                         rng.integers(-62_000_000_000_000_000, -31_000_000_000_000_000, 50),  # years before 1000
                         rng.integers(0, 4_102_444_800, 1000) * 1_000_000])  # whole seconds: no fraction
    known = rng.random(len(us)) > 0.1
    moments = [datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(v)) for v in us]
    assert texts(iso_utc(us, known), len(us)) == [m.isoformat() if k else "" for m, k in zip(moments, known)]
    assert texts(raven_utc(us, known), len(us)) == [m.strftime("%Y/%m/%d %H:%M:%S.%f")[:-3] if k else ""
                                                    for m, k in zip(moments, known)]


def columns(n: int, seed: int) -> SelectionColumns:
    rng = np.random.default_rng(seed)
    sources = ("/data/a, \"quoted\".wav", "unit-1/boot/stream0", "/data/tab\there.wav", "/data/é.flac")
    labels = ("Robin", "wren, winter", 'say "hi"', "tab\tlabel", "Grive musicienne")
    runs = rng.integers(1, 40, n)
    source = np.repeat(rng.integers(0, len(sources), len(runs)), runs)[:n]  # runs, sources recurring
    start = np.sort(rng.integers(0, 48_000 * 86_400, n))
    p_correct = rng.random(n)
    p_correct[rng.random(n) < 0.4] = np.nan
    return SelectionColumns(
        sources=sources, displays=("a", "unit-1_boot_stream0", "tab_here", "é"), begin_paths=sources,
        begin_files=("a.wav", "boot_s0", "tab\there.wav", "é.flac"), source=source.astype(np.int64),
        labels=labels, scientific=("Erithacus rubecula", "", "", "", "Turdus philomelos"),
        label=rng.integers(0, len(labels), n), begin_s=start / 48_000, end_s=(start + 480_000) / 48_000,
        score=(rng.standard_normal(n) * 20).astype(np.float32).astype(np.float64),
        cosine=rng.uniform(-1, 1, n).astype(np.float32).astype(np.float64), rank=rng.integers(1, 4, n),
        p_correct=p_correct, utc_us=1_714_521_600_000_000 + (start * 1_000_000) // 48_000,
        utc_known=rng.random(n) > 0.2, band_hz=(50.0, 14_000.0))


def test_column_writers_write_the_row_writers_bytes(tmp_path: Path) -> None:
    by_rows, by_columns = tmp_path / "rows", tmp_path / "columns"
    by_rows.mkdir()
    by_columns.mkdir()
    row_csv, column_csv = DetectionsCsv(by_rows), DetectionsCsv(by_columns)
    row_tables = RecordingTables(by_rows, ("raven", "audacity"))
    column_tables = RecordingTables(by_columns, ("raven", "audacity"))
    for seed in range(4):  # several writes: selection numbers continue where each table stopped
        c = columns(3_000, seed)
        if seed == 3:  # a NUL in a label: the column path hands the rows to the row writer
            c = replace(c, labels=(*c.labels[:-1], "nul\0label"))
            assert not c.plain
        for source, first, stop in c.runs():
            row_csv.write(c.sources[source], selections(c, first, stop))
            row_tables.write(c.sources[source], c.displays[source], selections(c, first, stop))
        column_csv.write_columns(c)
        column_tables.write_columns(c)
    row_csv.close()
    column_csv.close()
    written = sorted(p.name for p in by_rows.iterdir())
    assert len(written) == 1 + 2 * 4 and written == sorted(p.name for p in by_columns.iterdir())
    for name in written:
        assert (by_rows / name).read_bytes() == (by_columns / name).read_bytes(), name


def test_exact_ties_huge_tiny_and_signed_zeros_take_pythons_rounding() -> None:
    """Dyadic values sit exactly on a rounding tie at some digit (half-to-even in Python, never half-up); with
    signed zeros, NaN, infinities, subnormals and values near 10^k they must all come out as Python writes them."""
    k = np.arange(1, 40_000, dtype=np.float64)
    ties = np.concatenate([k / 2**6, k / 2**10, k / 2**14, -k / 2**12, k * 2**20 + 0.5])
    near_powers = np.concatenate([10.0 ** np.arange(-30, 31) * f for f in (1.0, 0.9999995, 0.99999949, 1.0000005)])
    odd = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 5e-324, -5e-324, 1e-310, 1.7976931348623157e308,
                    -1.7976931348623157e308, 9.9999995e-5, 9.99999e-5, 999999.5, 999999.49999999994])
    x = np.concatenate([ties, near_powers, odd])
    for spec, column in ((".3f", fixed(x, 3)), (".4f", fixed(x, 4)), (".6g", general6(x))):
        want = [format(float(v), spec) for v in x]
        got = texts(column, len(x))
        assert got == want, [(float(v), w, g) for v, w, g in zip(x, want, got) if w != g][:5]


def test_blank_rows_stay_empty_whatever_their_value() -> None:
    """p_correct is empty where NaN (the row writer's ``p_correct_text``) and a time is empty where unknown,
    whatever number the row holds; the others are formatted as if the blank rows were not there."""
    p = np.array([np.nan, 0.5, np.nan, 1.0, 0.00005, -0.0, np.nan])
    assert texts(fixed(p, 4, ~np.isnan(p)), len(p)) == ["", "0.5000", "", "1.0000", "0.0001", "-0.0000", ""]
    garbage = np.array([2**62, -(2**62), 0, 1_714_521_600_123_456, 1_714_521_600_000_000])
    known = np.array([False, False, False, True, True])
    assert texts(iso_utc(garbage, known), 5) == ["", "", "", "2024-05-01T00:00:00.123456+00:00",
                                                  "2024-05-01T00:00:00+00:00"]
    assert texts(raven_utc(garbage, known), 5) == ["", "", "", "2024/05/01 00:00:00.123", "2024/05/01 00:00:00.000"]


def test_times_days_far_apart_equal_python() -> None:
    """A column spanning thousands of years (dates formatted per distinct day, not per day of the span), with
    years outside 1000-9999 (Python writes those)."""
    us = np.array([-62_135_596_800_000_000, -30_000_000_000_000_000, 253_402_300_799_999_999, 0, 86_399_999_999,
                   1_000_000_000_000_000, -1], np.int64)
    known = np.ones(len(us), bool)
    moments = [datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(v)) for v in us]
    assert texts(iso_utc(us, known), len(us)) == [m.isoformat() for m in moments]
    assert texts(raven_utc(us, known), len(us)) == [m.strftime("%Y/%m/%d %H:%M:%S.%f")[:-3] for m in moments]


def test_digits_pad_blank_and_widths() -> None:
    n = np.array([0, 7, 42, 9_999, 10_000, 123_456_789, 2**31, 10**18 - 1])
    assert texts(digits(n), len(n)) == [str(v) for v in n]
    assert texts(digits(n, 6), len(n)) == [f"{v:06d}" for v in n]
    widths = np.array([1, 3, 1, 8, 2, 1, 12, 3])
    assert texts(digits(n, widths, n % 2 == 0), len(n)) == [f"{v:0{w}d}" if v % 2 == 0 else ""
                                                             for v, w in zip(n, widths)]
