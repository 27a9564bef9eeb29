"""Where a Parquet column's values lie in the file: the page headers of uncompressed ``DATA_PAGE_V2`` pages.

A Parquet ``FixedSizeList<float16, D>`` column stores, per page, the list's repetition levels (a few bytes a row)
followed by the values themselves, PLAIN-encoded: ``rows × D`` float16 back to back. Reading such a column
through a Parquet library decodes the levels value by value (~5 µs a window here); mapping the value runs of its
pages is a zero-copy view of the same bytes. This module reads just enough of the Thrift compact protocol to find
those runs (the page header: its type, sizes and level lengths), so the one Parquet copy is also what scans map.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_PAGE_V2 = 3
"""``PageType.DATA_PAGE_V2`` of parquet.thrift."""
_STRUCT, _BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP = \
    12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11


class PageError(ValueError):
    """The bytes are not the page layout a zero-copy map needs (the caller decodes the column instead)."""


@dataclass(frozen=True)
class ValueRun:
    """One page's values: ``rows`` rows starting ``offset`` bytes into the file, ``length`` bytes long."""

    offset: int
    length: int
    rows: int


class _Reader:
    """A cursor over Thrift compact-protocol bytes."""

    def __init__(self, data: memoryview, at: int) -> None:
        self.data, self.at = data, at

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise PageError("page header runs past the column chunk")
        value = self.data[self.at]
        self.at += 1
        return int(value)

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise PageError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, kind: int) -> None:
        if kind in (_BOOL_TRUE, _BOOL_FALSE):
            return
        if kind == _BYTE:
            self.at += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.at += 8
        elif kind == _BINARY:
            self.at += self.varint()
        elif kind in (_LIST, _SET):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self.skip(head & 0x0F)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == _STRUCT:
            self.struct({})
        else:
            raise PageError(f"unknown Thrift type {kind}")

    def struct(self, nested: dict[int, dict[int, int]]) -> dict[int, int]:
        """Integer and boolean fields of a struct by id; the fields of a nested struct ``id`` go into ``nested[id]``
        (other nested structs are skipped)."""
        fields: dict[int, int] = {}
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return fields
            delta, kind = head >> 4, head & 0x0F
            field = last + delta if delta else self.zigzag()
            last = field
            if kind == _STRUCT and field in nested:
                nested[field].update(self.struct({}))
            elif kind in (_I16, _I32, _I64):
                fields[field] = self.zigzag()
            elif kind in (_BOOL_TRUE, _BOOL_FALSE):
                fields[field] = int(kind == _BOOL_TRUE)
            else:
                self.skip(kind)


def value_runs(data: memoryview, start: int, end: int, value_bytes: int) -> list[ValueRun]:
    """The value runs of the pages of one column chunk in ``data[start:end]``, each value ``value_bytes`` long.

    Raises :class:`PageError` unless every page is an uncompressed ``DATA_PAGE_V2`` without nulls whose values
    fill the rest of the page (PLAIN, fixed width) — the layout :func:`desk.archive.shardfile.write_shard` writes.
    """
    runs: list[ValueRun] = []
    at = start
    while at < end:
        reader = _Reader(data, at)
        v2: dict[int, int] = {}
        header = reader.struct({8: v2})
        if header.get(1) != DATA_PAGE_V2 or not v2:
            raise PageError(f"page at byte {at} is not a DATA_PAGE_V2 page")
        size = header[3]
        # DataPageHeaderV2: 1 num_values, 2 num_nulls, 3 num_rows, 4 encoding, 5 def bytes, 6 rep bytes, 7 compressed
        if v2.get(2, 0) or v2.get(4) != 0 or v2.get(7, 1):
            raise PageError(f"page at byte {at} has nulls, is not PLAIN or is compressed")
        levels = v2.get(5, 0) + v2.get(6, 0)
        values = size - levels
        if values != v2[1] * value_bytes:
            raise PageError(f"page at byte {at}: {values} value bytes for {v2[1]} values")
        runs.append(ValueRun(reader.at + levels, values, v2[3]))
        at = reader.at + size
    if at != end:
        raise PageError("pages overrun their column chunk")
    return runs
