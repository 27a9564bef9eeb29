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
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

US_PER_DAY = 86_400_000_000
FAST_FIXED_BELOW = float(2**40)
"""|x| × 10^decimals below this: the float product is within 2^-13 of the exact one."""
TIE_MARGIN = 1e-6
"""A scaled value this close to ``k + 0.5`` is formatted by Python (an exact tie, or too close to tell)."""
ROUNDING_ULPS = 2.0**-50
"""Relative error bound of a scaled value (a product or quotient by a power of ten, each within one ulp): a value
nearer a tie than this times its size is formatted by Python."""
_ZERO = ord("0")
ROWS_PER_BLOCK = 4096
"""Rows laid side by side at once (~0.75 MB of a Raven table's pieces: the copy stays in the L2 cache; one
matrix of a million rows took 2.3x as long)."""


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


def _patch(text: Text, rows: np.ndarray, strings: Sequence[str]) -> Text:
    """``text`` with ``rows`` replaced by ``strings`` (only those rows of its pieces are touched)."""
    if not len(rows):
        return text
    patch = _from_strings(strings)
    chars = np.zeros((len(text[0].lengths), patch.chars.shape[1]), np.uint8)
    chars[rows] = patch.chars
    lengths = np.zeros(len(chars), np.int64)
    lengths[rows] = patch.lengths
    cleared = [Piece(chars, lengths)]
    for piece in text:
        kept = piece.chars if piece.chars.flags.writeable else piece.chars.copy()  # a constant is a broadcast view
        kept[rows] = 0
        kept_lengths = piece.lengths.copy()
        kept_lengths[rows] = 0
        cleared.append(Piece(kept, kept_lengths))
    return cleared


def _table(width: int, count: int) -> np.ndarray:
    """The ``width`` ASCII digits of 0 .. count - 1, zero-padded: ``(count, width)`` uint8."""
    n = np.arange(count)
    return np.stack([_ZERO + n // 10**place % 10 for place in range(width - 1, -1, -1)], axis=1).astype(np.uint8)


_POWERS = 10 ** np.arange(1, 19, dtype=np.int64)
_PAIRS = _table(2, 100)
_QUADS = _table(4, 10_000).view(np.uint32).ravel()
"""The four ASCII digits of 0-9999 as one uint32 each (a gather of four bytes at once)."""
_NULS = np.array([[0] * k + [255] * (4 - k) for k in range(5)], np.uint8).view(np.uint32).ravel()
"""Masks keeping the last ``4 - k`` bytes of a group of four (``k`` leading NULs)."""


def digits(n: np.ndarray, width: np.ndarray | int = 1, keep: np.ndarray | None = None) -> Text:
    """Non-negative integers in decimal, zero-padded to at least ``width`` digits (per row or for all); empty
    where ``keep`` is False."""
    n = np.asarray(n, np.int64)
    top = int(n.max(initial=0))
    if isinstance(width, int) and top < 10**width:
        lengths = np.full(len(n), width, np.int64)  # a fixed width: no digit count to find
    else:
        lengths = np.maximum(np.searchsorted(_POWERS, n, side="right") + 1, width)
    if keep is not None:
        lengths = np.where(keep, lengths, 0)
    groups = max(1, -(-int(lengths.max(initial=1)) // 4))
    quads = np.empty((len(n), groups), np.uint32)
    rest = n.astype(np.int32) if top < 2**31 else n  # int32 division: a third of the time of int64
    for group in range(groups - 1, -1, -1):
        rest, low = np.divmod(rest, 10_000)
        quads[:, group] = _QUADS[low]
    pad = 4 * groups - lengths
    if isinstance(width, int) and keep is None and not (pad - pad[:1]).any():
        out = quads.view(np.uint8)[:, int(pad[0]) if len(pad) else 0 :]  # the same width in every row
        return [Piece(out, lengths)]
    for group in range(groups):
        quads[:, group] &= _NULS[np.clip(pad - 4 * group, 0, 4)]
    unused = int(pad.min(initial=4 * groups))  # leading columns NUL in every row: left out of the piece
    return [Piece(quads.view(np.uint8)[:, unused:], lengths)]


def _char(char: str, keep: np.ndarray) -> Text:
    """One ASCII character where ``keep``, else nothing."""
    return [Piece((keep * np.uint8(ord(char))).astype(np.uint8)[:, None], keep.astype(np.int64))]


def concat(parts: Sequence[Text]) -> Text:
    """Row by row, the parts one after another."""
    return [piece for part in parts for piece in part]


def rows(fields: Sequence[Text], delimiter: str, end: str = "\n") -> tuple[memoryview, np.ndarray]:
    """The rows as UTF-8 bytes (fields separated by ``delimiter``, each row ended by ``end``; a view of them, not
    a copy) and ``(n + 1,)`` byte offsets: row ``i`` is ``bytes[offsets[i]:offsets[i + 1]]``."""
    n = len(fields[0][0].lengths)
    if not n:
        return memoryview(b""), np.zeros(1, np.int64)
    sep = constant(delimiter, n)
    pieces: Text = []
    for field in fields:
        pieces += [*field, *sep]
    pieces = [*pieces[: len(pieces) - len(sep)], *constant(end, n)]
    lengths = np.zeros(n, np.int64)
    for piece in pieces:
        lengths += piece.lengths
    out = np.empty(int(lengths.sum()), np.uint8)
    at = 0
    for first in range(0, n, ROWS_PER_BLOCK):  # a block's rows side by side stay in the cache
        chars = np.hstack([p.chars[first : first + ROWS_PER_BLOCK] for p in pieces])
        kept = chars[chars != 0]
        out[at : at + len(kept)] = kept
        at += len(kept)
    return out.data, np.concatenate([[0], np.cumsum(lengths)])


def _python(values: np.ndarray, rows: np.ndarray, spec: str) -> list[str]:
    return [format(float(v), spec) for v in values[rows]]


def _off_tie(scaled: np.ndarray) -> np.ndarray:
    """Scaled values whose float64 product (within ~2 ulp of the exact one) rounds to the integer the exact value
    does: farther from ``k + 0.5`` than that error can reach."""
    return np.abs(scaled - np.floor(scaled) - 0.5) > np.maximum(scaled * ROUNDING_ULPS, TIE_MARGIN)


def fixed(x: np.ndarray, decimals: int, keep: np.ndarray | None = None) -> Text:
    """``f"{x:.{decimals}f}"`` of float64 values (empty where ``keep`` is False)."""
    x = np.asarray(x, np.float64)
    keep = np.ones(len(x), bool) if keep is None else keep
    scale = 10**decimals
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.abs(x) * scale
        fast = np.isfinite(x) & (scaled < FAST_FIXED_BELOW) & _off_tie(scaled)
    whole = np.rint(np.where(fast, scaled, 0)).astype(np.int64)
    head, tail = np.divmod(whole, scale)
    body = [*_char("-", np.signbit(x) & keep), *digits(head, 1, keep)]
    if decimals:
        body += [*_char(".", keep), *digits(tail, decimals, keep)]
    slow = np.flatnonzero(~fast & keep)
    return _patch(body, slow, _python(x, slow, f".{decimals}f"))


with np.errstate(over="ignore", under="ignore"):
    _TENS = 10.0 ** np.arange(-400, 401).astype(np.float64)
"""10^k for k = -400 .. 400 (10^-400 is 0 and 10^309 inf: only |exponent| < 290 is looked up)."""
_TAIL_ZEROS = np.array([3] + [len(str(k)) - len(str(k).rstrip("0")) for k in range(1, 1000)], np.int32)
"""Trailing zeros of 0-999 (three for 0)."""


def general6(x: np.ndarray) -> Text:
    """``f"{x:.6g}"`` of float64 values (6 significant digits, trailing zeros dropped, C's ``%g`` rule)."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    zero = a == 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        usable = np.isfinite(a) & (a > 1e-290) & (a < 1e290)
        exponent = np.where(usable, np.floor(np.log10(np.where(usable, a, 1.0))), 0).astype(np.int32)
        scaled = a / _TENS[exponent + 395]  # a / 10^(exponent - 5)
        fast = (usable & (scaled >= 100_000) & (scaled < 999_999.5 - TIE_MARGIN) & _off_tie(scaled)) | zero
    n = np.where(fast & ~zero, np.rint(scaled), 0).astype(np.int32)
    plain = (exponent >= -4) & (exponent < 6)
    decimals = np.where(plain, 5 - exponent, 5)  # %f form: 5 - exponent decimals (0..9)
    low = n % 1000
    dropped = np.minimum(np.where(low == 0, 3 + _TAIL_ZEROS[n // 1000], _TAIL_ZEROS[low]), decimals)
    kept = decimals - dropped
    unit = (10 ** decimals).astype(np.int32)
    fraction = (n % unit) // (10 ** dropped).astype(np.int32)
    has_point = kept > 0
    body = [*_char("-", np.signbit(x)), *digits(n // unit), *_char(".", has_point),
            *digits(fraction, kept, has_point)]
    if not plain[fast].all():
        power = fast & ~plain
        body += [*_char("e", power), *choices(["", "+", "-"], np.where(power, 1 + (exponent < 0), 0)),
                 *digits(np.abs(exponent), 2, power)]
    slow = np.flatnonzero(~fast)
    return _patch(body, slow, _python(x, slow, ".6g"))


_SECONDS_OF_DAY = 86_400


@functools.cache
def _clock_table() -> np.ndarray:
    """``HH:MM:SS`` of every second of a day as one uint64 each (a gather of eight bytes at once)."""
    second = np.arange(_SECONDS_OF_DAY)
    pairs = _PAIRS
    chars = np.hstack([pairs[second // 3600], np.full((_SECONDS_OF_DAY, 1), ord(":"), np.uint8),
                       pairs[second // 60 % 60], np.full((_SECONDS_OF_DAY, 1), ord(":"), np.uint8),
                       pairs[second % 60]])
    return np.ascontiguousarray(chars).view(np.uint64).ravel()


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days since the epoch -> year, month, day (proleptic Gregorian; H. Hinnant's civil_from_days)."""
    z = days + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def _dates(days: np.ndarray, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """``YYYY<sep>MM<sep>DD`` per row ``(n, 10)`` uint8, and whether its year has four digits (else Python
    writes it). Formatted once per distinct day (a chunk spans a few days), then gathered."""
    first, last = (int(days.min()), int(days.max())) if len(days) else (0, 0)
    if last - first <= 2 * len(days) + 10_000:
        distinct, where = np.arange(first, last + 1, dtype=np.int64), days - first
    else:
        distinct, where = np.unique(days, return_inverse=True)
    year, month, day = _civil(distinct)
    plain = (year >= 1000) & (year <= 9999)
    sep = np.full((len(distinct), 1), ord(separator), np.uint8)
    pairs = _PAIRS
    year_chars = _QUADS[np.where(plain, year, 0)].view(np.uint8).reshape(-1, 4)
    table = np.hstack([year_chars, sep, pairs[month], sep, pairs[day]])
    return table[where], plain[where]


def clock_text(us: np.ndarray, known: np.ndarray, dates: str, between: str, decimals: int, always: bool,
               suffix: str, slow: Callable[[datetime], str]) -> Text:
    """UTC instants (microseconds since the epoch) as ``YYYY<dates>MM<dates>DD<between>HH:MM:SS``, then a point and
    the first ``decimals`` digits of the microseconds (cut, not rounded; ``always``, else only where they are not
    all zero), then ``suffix``; empty where not ``known``; years outside 1000-9999 by ``slow``."""
    us = np.asarray(us, np.int64)
    days = np.where(known, us // US_PER_DAY, us[known][:1] // US_PER_DAY if known.any() else 0)
    rest = np.where(known, us - days * US_PER_DAY, 0)
    second = (rest // 1_000_000).astype(np.int32)
    micro = (rest - second.astype(np.int64) * 1_000_000).astype(np.int32)
    date, plain = _dates(days, dates)
    shown = known & plain
    clock = _clock_table()[np.where(shown, second, 0)].view(np.uint8).reshape(-1, 8)
    date[~shown] = 0
    clock[~shown] = 0
    part = micro // 10 ** (6 - decimals)
    point = shown if always else shown & (part != 0)
    body = [Piece(date, shown * 10), *_char(between, shown), Piece(clock, shown * 8), *_char(".", point),
            *digits(part, decimals, point)]
    if suffix:
        body += _blank_constant(suffix, shown)
    rows = np.flatnonzero(known & ~plain)
    return _patch(body, rows, [slow(_moment(int(v))) for v in us[rows]])


def _blank_constant(value: str, keep: np.ndarray) -> Text:
    encoded = np.frombuffer(value.encode("utf-8"), np.uint8)
    return [Piece(keep[:, None] * encoded[None, :], keep * len(encoded))]


def _moment(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def iso_utc(us: np.ndarray, known: np.ndarray) -> Text:
    """``datetime.isoformat()`` of aware UTC instants (microseconds since the epoch); empty where not ``known``."""
    return clock_text(us, known, "-", "T", 6, False, "+00:00", datetime.isoformat)


def raven_utc(us: np.ndarray, known: np.ndarray) -> Text:
    """``strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]`` of UTC instants (milliseconds cut, not rounded)."""
    return clock_text(us, known, "/", " ", 3, True, "",
                      lambda moment: moment.strftime("%Y/%m/%d %H:%M:%S.%f")[:-3])


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
                            "p_correct": lambda: fixed(p, 4, ~np.isnan(p))}[column]()
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


def csv_text(c: SelectionColumns, dialect: dict[str, object]) -> memoryview:
    """``detections.csv`` rows (:func:`edge.batch.tables.csv_row`) of every selection, UTF-8."""
    return rows([choices(csv_quoted(c.sources, **dialect), c.source), c.text("begin"), c.text("end"),
                 choices(csv_quoted(c.labels, **dialect), c.label), c.text("score"), general6(c.cosine),
                 c.text("rank"), iso_utc(c.utc_us, c.utc_known), c.text("p_correct")],
                str(dialect["delimiter"]), str(dialect["lineterminator"]))[0]


def raven_text(c: SelectionColumns, numbers: np.ndarray) -> tuple[memoryview, np.ndarray]:
    """Raven selection-table rows (:func:`edge.batch.tables.raven_row`) of every selection, numbered ``numbers``,
    as :func:`rows` returns them."""
    n, tab = len(c.source), {"delimiter": "\t", "lineterminator": "\n"}
    return rows([digits(numbers), constant("Spectrogram 1", n), constant("1", n), c.text("begin"), c.text("end"),
                 constant(str(float(c.band_hz[0])), n), constant(str(float(c.band_hz[1])), n),
                 choices(csv_quoted(c.labels, **tab), c.label), c.text("score"), c.text("rank"), c.text("p_correct"),
                 choices(csv_quoted(c.begin_paths, **tab), c.source),
                 choices(csv_quoted(c.begin_files, **tab), c.source), c.text("begin"),
                 raven_utc(c.utc_us, c.utc_known), constant("", n)], "\t")
