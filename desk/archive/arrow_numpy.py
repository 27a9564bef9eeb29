"""Arrow columns as numpy arrays without pandas.

pyarrow's ``to_numpy`` imports pandas on its first call (≈ 0.7 s cold) even for an int64 column, and the archive
jobs (``logs rescore``, ``search``) never need pandas otherwise. :func:`column_numpy` reads the column's buffers
directly and gives what ``to_numpy(zero_copy_only=False)`` gives: numbers and times in their own dtype (integers
with nulls as float64 with NaN, times with nulls as NaT), everything else as an object array of Python values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOATS = {"halffloat": np.float16, "float": np.float32, "double": np.float64}


def column_numpy(column: Any) -> np.ndarray:
    """A ``pyarrow.Array`` or ``ChunkedArray`` as a numpy array, as ``to_numpy(zero_copy_only=False)`` makes it."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind, count = array.type, len(array)
    types = _dtypes(pa, kind)
    if types is None:
        values = np.empty(count, object)
        values[:] = array.to_pylist()
        return values
    storage, dtype = types
    buffers = array.buffers()
    if pa.types.is_boolean(kind):
        found = _bits(buffers[1], array.offset, count)
    elif count:
        raw = np.frombuffer(buffers[1], storage, count, array.offset * np.dtype(storage).itemsize)
        found = raw.view(dtype) if raw.itemsize == dtype.itemsize else raw.astype(np.int64).view(dtype)
    else:
        found = np.empty(0, dtype)
    if not array.null_count:
        return found
    missing = ~_bits(buffers[0], array.offset, count)
    if pa.types.is_boolean(kind):
        values = found.astype(object)
        values[missing] = None
        return values
    values = found.astype(np.float64) if np.issubdtype(dtype, np.integer) else found.copy()
    values[missing] = np.datetime64("NaT") if dtype.kind == "M" else np.timedelta64("NaT") if dtype.kind == "m" \
        else np.nan
    return values


def _dtypes(pa: Any, kind: Any) -> tuple[Any, np.dtype[Any]] | None:
    """(numpy dtype of the values buffer, numpy dtype of the result) of an Arrow type; None for types read as
    Python values (strings, lists, dictionaries, decimals …)."""
    if pa.types.is_boolean(kind):
        return np.bool_, np.dtype(np.bool_)
    if pa.types.is_integer(kind):
        return np.dtype(str(kind)), np.dtype(str(kind))
    if pa.types.is_floating(kind):
        return FLOATS[str(kind)], np.dtype(FLOATS[str(kind)])
    if pa.types.is_timestamp(kind):
        return np.int64, np.dtype(f"datetime64[{kind.unit}]")
    if pa.types.is_duration(kind):
        return np.int64, np.dtype(f"timedelta64[{kind.unit}]")
    if pa.types.is_date32(kind):
        return np.int32, np.dtype("datetime64[D]")
    if pa.types.is_date64(kind):
        return np.int64, np.dtype("datetime64[ms]")
    return None


def _bits(buffer: Any, offset: int, count: int) -> np.ndarray:
    """``count`` bits of an Arrow bitmap from bit ``offset``, as booleans."""
    return np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little")[offset : offset + count].astype(bool)
