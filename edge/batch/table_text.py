"""Result-table text a column at a time (numpy): the bulk path of :mod:`edge.batch.tables`.

Every field comes out byte for byte as the row writer makes it: ``f"{x:.3f}"``, ``f"{x:.6g}"``, ``str(n)``,
``datetime.isoformat()``, the csv module's quoting. A value whose decimal rounding float64 arithmetic could get
wrong (within a hair of a rounding tie, a very large magnitude, NaN or infinity, a year outside 1000-9999) is
formatted by Python itself, so only the speed differs: a million rows in well under a second, where building
them row by row takes ~15 s.

A column of text is a list of :class:`Piece`: ``(n, width)`` uint8 matrices of UTF-8 bytes padded with NUL; the
rows are all pieces side by side with the NULs dropped (text holding a NUL takes the row writer).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

US_PER_DAY = 86_400_000_000
FAST_FIXED_BELOW = float(2**40)
"""|x| × 10^decimals below this: the float product is within 2^-13 of the exact one."""
TIE_MARGIN = 1e-3
"""A scaled value this close to ``k + 0.5`` is formatted by Python (an exact tie, or too close to tell)."""
_ZERO = ord("0")


@dataclass(frozen=True)
class Piece:
    """``n`` strings: ``chars`` ``(n, width)`` uint8, row ``i`` holding its ``lengths[i]`` bytes of UTF-8 text in
    one run and NUL everywhere else (so the rows of pieces side by side, NULs dropped, are the text)."""

    chars: np.ndarray
    lengths: np.ndarray


Text = list[Piece]
"""A column of strings: per row, its pieces' bytes one after another (made by concatenating lists)."""


def has_nul(strings: Sequence[str]) -> bool:
    """A NUL in any string: :func:`rows` drops NULs, so such text takes the row writer."""
    return any("\0" in s for s in strings)


def _from_strings(strings: Sequence[str]) -> Piece:
    if has_nul(strings):
        raise ValueError("text with NUL characters cannot be written a column at a time")
    encoded = [s.encode("utf-8") for s in strings]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    width = int(lengths.max(initial=0))
    chars = np.frombuffer(b"".join(e.ljust(width, b"\0") for e in encoded), np.uint8)
    return Piece(chars.reshape(len(encoded), width), lengths)


def choices(values: Sequence[str], codes: np.ndarray) -> Text:
    """``values[codes[i]]`` per row (a label, a recording: few distinct strings, encoded once)."""
    distinct = _from_strings(values)
    codes = np.asarray(codes, np.int64)
    return [Piece(distinct.chars[codes], distinct.lengths[codes])]


def constant(value: str, n: int) -> Text:
    encoded = np.frombuffer(value.encode("utf-8"), np.uint8)
    return [Piece(np.broadcast_to(encoded, (n, len(encoded))), np.full(n, len(encoded), np.int64))]


def csv_quoted(values: Sequence[str], **dialect: object) -> list[str]:
    """Each value as the csv module writes it inside a row of ``dialect`` (quoted where it must be)."""
    out = []
    for value in values:
        buffer = io.StringIO()
        csv.writer(buffer, **dialect).writerow([value, ""])  # type: ignore[arg-type]
        line = buffer.getvalue()
        out.append(line[: len(line) - len(str(dialect.get("lineterminator", "\r\n"))) - 1])
    return out


def _blank(text: Text, keep: np.ndarray) -> Text:
    """``text`` where ``keep``, else the empty string."""
    return [Piece(p.chars * keep[:, None].astype(np.uint8), np.where(keep, p.lengths, 0)) for p in text]


def _patch(text: Text, rows: np.ndarray, strings: Sequence[str]) -> Text:
    """``text`` with ``rows`` replaced by ``strings``."""
    if not len(rows):
        return text
    patch = _from_strings(strings)
    chars = np.zeros((len(text[0].lengths), patch.chars.shape[1]), np.uint8)
    chars[rows] = patch.chars
    lengths = np.zeros(len(chars), np.int64)
    lengths[rows] = patch.lengths
    kept = np.ones(len(chars), bool)
    kept[rows] = False
    return [Piece(chars, lengths), *_blank(text, kept)]


_POWERS = 10 ** np.arange(1, 19, dtype=np.int64)
_PAIRS = np.array([[_ZERO + i // 10, _ZERO + i % 10] for i in range(100)], np.uint8)
"""The two ASCII digits of 0-99."""


def digits(n: np.ndarray, width: np.ndarray | int = 1) -> Text:
    """Non-negative integers in decimal, zero-padded to at least ``width`` digits (per row or for all)."""
    n = np.asarray(n, np.int64)
    if len(n) and n.max() < 2**31:
        n = n.astype(np.int32)  # a third of the time of int64 division
    lengths = np.maximum(np.searchsorted(_POWERS, n, side="right") + 1, width)
    columns = int(lengths.max(initial=0))
    chars = np.empty((len(n), columns + columns % 2), np.uint8)
    rest = n.copy()
    for column in range(chars.shape[1] - 2, -1, -2):  # two digits a step
        rest, pairs = np.divmod(rest, 100)
        chars[:, column : column + 2] = _PAIRS[pairs]
    chars = chars[:, columns % 2 :]
    chars[np.arange(columns) < (columns - lengths)[:, None]] = 0
    return [Piece(chars, lengths.astype(np.int64))]


def concat(parts: Sequence[Text]) -> Text:
    """Row by row, the parts one after another."""
    return [piece for part in parts for piece in part]


def rows(fields: Sequence[Text], delimiter: str, end: str = "\n") -> tuple[bytes, np.ndarray]:
    """The rows as UTF-8 bytes (fields separated by ``delimiter``, each row ended by ``end``) and ``(n + 1,)``
    byte offsets: row ``i`` is ``bytes[offsets[i]:offsets[i + 1]]``."""
    n = len(fields[0][0].lengths)
    if not n:
        return b"", np.zeros(1, np.int64)
    sep = constant(delimiter, n)
    pieces: Text = []
    for field in fields:
        pieces += [*field, *sep]
    pieces = [*pieces[: len(pieces) - len(sep)], *constant(end, n)]
    lengths = np.zeros(n, np.int64)
    for piece in pieces:
        lengths += piece.lengths
    chars = np.hstack([p.chars for p in pieces])
    return chars[chars != 0].tobytes(), np.concatenate([[0], np.cumsum(lengths)])


def _python(values: np.ndarray, rows: np.ndarray, spec: str) -> list[str]:
    return [format(float(v), spec) for v in values[rows]]


def _signed(x: np.ndarray, body: Text) -> Text:
    return concat([_blank(constant("-", len(x)), np.signbit(x)), body])


def fixed(x: np.ndarray, decimals: int) -> Text:
    """``f"{x:.{decimals}f}"`` of float64 values."""
    x = np.asarray(x, np.float64)
    scale = 10**decimals
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.abs(x) * scale
        fast = np.isfinite(x) & (scaled < FAST_FIXED_BELOW) & (np.abs(scaled - np.floor(scaled) - 0.5) > TIE_MARGIN)
    whole = np.where(fast, np.rint(np.where(fast, scaled, 0)), 0).astype(np.int64)
    body = concat([digits(whole // scale), constant(".", len(x)), digits(whole % scale, decimals)]) if decimals \
        else digits(whole)
    slow = np.flatnonzero(~fast)
    return _patch(_signed(x, body), slow, _python(x, slow, f".{decimals}f"))


def _trailing_zeros(n: np.ndarray, most: np.ndarray) -> np.ndarray:
    count = np.zeros(len(n), np.int64)
    for power in range(1, 7):
        count += (n % 10**power == 0) & (power <= most)
    return count


def general6(x: np.ndarray) -> Text:
    """``f"{x:.6g}"`` of float64 values (6 significant digits, trailing zeros dropped, C's ``%g`` rule)."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        usable = np.isfinite(a) & (a > 1e-290) & (a < 1e290)
        exponent = np.where(usable, np.floor(np.log10(np.where(usable, a, 1.0))), 0).astype(np.int64)
        scaled = np.where(usable, a / 10.0 ** (exponent - 5).astype(np.float64), 0)
    fast = usable & (scaled >= 100_000) & (scaled < 999_999.5 - TIE_MARGIN) & \
        (np.abs(scaled - np.floor(scaled) - 0.5) > TIE_MARGIN)
    n = np.where(fast, np.rint(scaled), 100_000).astype(np.int64)
    plain = (exponent >= -4) & (exponent < 6)
    # %f form: 5 - exponent decimals (0..9), trailing zeros dropped
    decimals = np.where(plain, 5 - exponent, 5)
    unit = 10 ** decimals
    dropped = _trailing_zeros(n % unit, decimals) * ((n % unit) != 0) + decimals * ((n % unit) == 0)
    kept = decimals - dropped
    fraction = (n % unit) // 10**dropped
    head = np.where(plain, n // unit, n // 100_000)
    point = _blank(constant(".", len(x)), kept > 0)
    tail = _blank(digits(fraction, kept), kept > 0)
    power = _blank(concat([constant("e", len(x)), choices(["+", "-"], (exponent < 0).astype(np.int64)),
                           digits(np.abs(exponent), 2)]), ~plain)
    body = _signed(x, concat([digits(head), point, tail, power]))
    slow = np.flatnonzero(~fast & (a != 0))
    zero = np.flatnonzero(a == 0)
    body = _patch(body, zero, ["-0" if np.signbit(v) else "0" for v in x[zero]])
    return _patch(body, slow, _python(x, slow, ".6g"))


def _civil(us: np.ndarray) -> tuple[np.ndarray, ...]:
    """Microseconds since the epoch -> year, month, day, hour, minute, second, microsecond (proleptic UTC)."""
    days, rest = np.divmod(us, US_PER_DAY)
    z = days + 719_468  # days since 0000-03-01 (H. Hinnant's civil_from_days)
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    seconds, micro = np.divmod(rest, 1_000_000)
    return year, month, day, seconds // 3600, seconds // 60 % 60, seconds % 60, micro


def _moment(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def _times(us: np.ndarray, known: np.ndarray, build: Callable[..., list[Text]], slow: Callable[[datetime], str]) \
        -> Text:
    us = np.asarray(us, np.int64)
    year, month, day, hour, minute, second, micro = _civil(us)
    fast = known & (year >= 1000) & (year <= 9999)
    body = _blank(concat(build(year, month, day, hour, minute, second, micro)), known & fast)
    rows = np.flatnonzero(known & ~fast)
    return _patch(body, rows, [slow(_moment(int(v))) for v in us[rows]])


def iso_utc(us: np.ndarray, known: np.ndarray) -> Text:
    """``datetime.isoformat()`` of aware UTC instants (microseconds since the epoch); empty where not ``known``."""
    def build(year: np.ndarray, month: np.ndarray, day: np.ndarray, hour: np.ndarray, minute: np.ndarray,
              second: np.ndarray, micro: np.ndarray) -> list[Text]:
        n = len(year)
        return [digits(year, 4), constant("-", n), digits(month, 2), constant("-", n), digits(day, 2),
                constant("T", n), digits(hour, 2), constant(":", n), digits(minute, 2), constant(":", n),
                digits(second, 2), _blank(concat([constant(".", n), digits(micro, 6)]), micro != 0),
                constant("+00:00", n)]

    return _times(us, known, build, datetime.isoformat)


def raven_utc(us: np.ndarray, known: np.ndarray) -> Text:
    """``strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]`` of UTC instants (milliseconds cut, not rounded)."""
    def build(year: np.ndarray, month: np.ndarray, day: np.ndarray, hour: np.ndarray, minute: np.ndarray,
              second: np.ndarray, micro: np.ndarray) -> list[Text]:
        n = len(year)
        return [digits(year, 4), constant("/", n), digits(month, 2), constant("/", n), digits(day, 2),
                constant(" ", n), digits(hour, 2), constant(":", n), digits(minute, 2), constant(":", n),
                digits(second, 2), constant(".", n), digits(micro // 1000, 3)]

    return _times(us, known, build, lambda moment: moment.strftime("%Y/%m/%d %H:%M:%S.%f")[:-3])


@dataclass(frozen=True)
class SelectionColumns:
    """Selections as columns, grouped in runs of one source (a recording, a unit stream): row ``i`` is the
    :class:`edge.batch.tables.Selection` of ``source[i]``, ``labels[label[i]]`` and the other columns' row ``i``,
    with ``file_offset_s`` None and no clock sync (the table's time line is the recording's)."""

    sources: tuple[str, ...]
    """The identity of each source (``detections.csv``'s ``file``)."""
    displays: tuple[str, ...]
    """Per source, the name its Raven/Audacity tables are called by."""
    begin_paths: tuple[str, ...]
    begin_files: tuple[str, ...]
    source: np.ndarray
    """``(n,)`` int64 codes into the per-source tuples, in runs."""
    labels: tuple[str, ...]
    scientific: tuple[str, ...]
    """Per label, its scientific name ("" where the label file gives none)."""
    label: np.ndarray
    """``(n,)`` int64 codes into ``labels``."""
    begin_s: np.ndarray
    """``(n,)`` float64 seconds on the source's time line; ``end_s`` likewise."""
    end_s: np.ndarray
    score: np.ndarray
    """``(n,)`` float64; ``cosine`` likewise."""
    cosine: np.ndarray
    rank: np.ndarray
    """``(n,)`` int64, 1 = best."""
    p_correct: np.ndarray
    """``(n,)`` float64, NaN where the label has no confidence fit."""
    utc_us: np.ndarray
    """``(n,)`` int64 microseconds since the epoch of each start, where ``utc_known``."""
    utc_known: np.ndarray
    band_hz: tuple[float, float]

    def text(self, column: str) -> Text:
        """A column as every table writes it (formatted once, shared by ``detections.csv`` and Raven tables):
        ``begin``/``end`` ``.3f``, ``score`` ``.6g``, ``rank``, ``p_correct`` ``.4f`` (empty where NaN)."""
        made: dict[str, Text] = self.__dict__.setdefault("_texts", {})
        if column not in made:
            p = self.p_correct
            made[column] = {"begin": lambda: fixed(self.begin_s, 3), "end": lambda: fixed(self.end_s, 3),
                            "score": lambda: general6(self.score), "rank": lambda: digits(self.rank),
                            "p_correct": lambda: _blank(fixed(np.nan_to_num(p), 4), ~np.isnan(p))}[column]()
        return made[column]

    @property
    def plain(self) -> bool:
        """No NUL in any string (else the tables are written row by row)."""
        return not has_nul([*self.sources, *self.labels, *self.begin_paths, *self.begin_files])

    def runs(self) -> list[tuple[int, int, int]]:
        """(source code, first row, stop row) of each run of rows of one source, in row order."""
        cuts = np.flatnonzero(np.diff(self.source)) + 1
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        stops = np.concatenate([cuts, [len(self.source)]]).astype(np.int64)
        return [(int(self.source[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def csv_text(c: SelectionColumns, dialect: dict[str, object]) -> str:
    """``detections.csv`` rows (:func:`edge.batch.tables.csv_row`) of every selection."""
    return rows([choices(csv_quoted(c.sources, **dialect), c.source), c.text("begin"), c.text("end"),
                 choices(csv_quoted(c.labels, **dialect), c.label), c.text("score"), general6(c.cosine),
                 c.text("rank"), iso_utc(c.utc_us, c.utc_known), c.text("p_correct")],
                str(dialect["delimiter"]), str(dialect["lineterminator"]))[0].decode("utf-8")


def raven_text(c: SelectionColumns, numbers: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Raven selection-table rows (:func:`edge.batch.tables.raven_row`) of every selection, numbered ``numbers``,
    as :func:`rows` returns them."""
    n, tab = len(c.source), {"delimiter": "\t", "lineterminator": "\n"}
    return rows([digits(numbers), constant("Spectrogram 1", n), constant("1", n), c.text("begin"), c.text("end"),
                 constant(str(float(c.band_hz[0])), n), constant(str(float(c.band_hz[1])), n),
                 choices(csv_quoted(c.labels, **tab), c.label), c.text("score"), c.text("rank"), c.text("p_correct"),
                 choices(csv_quoted(c.begin_paths, **tab), c.source),
                 choices(csv_quoted(c.begin_files, **tab), c.source), c.text("begin"),
                 raven_utc(c.utc_us, c.utc_known), constant("", n)], "\t")
