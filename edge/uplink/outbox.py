"""The card is the outbox: what the card log made durable, read back in order, and the cursor of what was acked.

The cursor (``uplink/cursor.json`` on the card, replaced atomically and fsync'd) holds, per segment, the byte
offset up to which the broker acknowledged every line. It only moves after a PUBACK, so after a power cut, a
reboot or a broker outage the uplink re-sends from there: at least once, and the desk's natural keys make it
exactly once. Lines of the running boot's open segments are read only up to what the card log has fsync'd.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from edge import durable
from edge.card.cardformat import BOOTS_DIR, OPEN_SUFFIX, TEMP_PREFIX
from edge.uplink.messages import BOOTS_KIND, DATA_KINDS, Batch

log = logging.getLogger(__name__)

OUTBOX_DIR = "uplink"
CURSOR_FILE = "cursor.json"
CURSOR_VERSION = 1
MAX_READ_BYTES = 1 << 20
"""Bytes read from a segment per batch at most (a batch never holds a partial line)."""
SEGMENT = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})_(?P<boot>[^_/]+)_(?P<part>\d{3})\.(csv|jsonl)$")
EXTENSIONS = {"effort": "csv", "detections": "csv", "events": "jsonl", "health": "jsonl"}

Durable = Callable[[], dict[str, int]]
"""Per open segment of the running boot (sealed card-relative name), the bytes the card log fsync'd so far."""


class Cursor:
    """Per segment, the byte offset up to which the broker acknowledged everything; saved on the card."""

    def __init__(self, root: Path) -> None:
        self.path = root / OUTBOX_DIR / CURSOR_FILE
        self.acked: dict[str, int] = {}
        self.problem = ""
        """Why a cursor file on the card could not be used (everything is then re-sent), or empty."""
        self._saved: dict[str, int] = {}
        if self.path.is_file():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                acked = raw["acked"]
                if raw.get("v") != CURSOR_VERSION or not isinstance(acked, dict):
                    raise ValueError(f"version {raw.get('v')!r}")
                self.acked = {str(k): int(v) for k, v in acked.items()}
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.problem = f"{self.path} unreadable ({e}); re-sending the whole card"
        self._saved = dict(self.acked)

    def advance(self, segment: str, end: int) -> None:
        if end > self.acked.get(segment, 0):
            self.acked[segment] = end

    @property
    def dirty(self) -> bool:
        return self.acked != self._saved

    def save(self) -> None:
        """Write the cursor durably (temp file, fsync, rename, fsync of the folder); raises ``OSError``."""
        if not self.dirty:
            return
        durable.make_dirs(self.path.parent)
        data = json.dumps({"v": CURSOR_VERSION, "acked": self.acked}, sort_keys=True, separators=(",", ":"))
        durable.atomic_write(self.path, data.encode("utf-8"))
        self._saved = dict(self.acked)


class CardOutbox:
    """Reads the card's durable lines in order: boot manifests, then segments by day, boot, kind and part."""

    def __init__(self, root: Path, kinds: Iterable[str], boot_id: str = "", durable: Durable | None = None) -> None:
        self.root = root
        self.boot_id = boot_id
        """The running boot, whose open segments are read only up to ``durable()``; every other file is whole."""
        self.kinds = [k for k in DATA_KINDS if k in set(kinds) and k != BOOTS_KIND]
        self.durable = durable
        self._done: set[str] = set()
        """Sealed segments (and manifests) sent and acknowledged in full: never looked at again."""
        self._headers: dict[str, str] = {}

    def next_batch(self, position: dict[str, int], max_rows: int) -> Batch | None:
        """The oldest unsent lines after ``position`` (per segment, bytes already sent), at most ``max_rows``."""
        open_sizes = self.durable() if self.durable is not None else {}
        for name in self._manifests():
            if position.get(name, 0) == 0:
                batch = self._manifest_batch(name)
                if batch is not None:
                    return batch
        for name, path, sealed in self._segments():
            limit = None
            if not sealed and SEGMENT.match(path.name[: -len(OPEN_SUFFIX)])["boot"] == self.boot_id:  # type: ignore[index]
                limit = open_sizes.get(name, 0)  # the running boot: only what the card log fsync'd
            batch = self._read(name, path, position.get(name, 0), limit, max_rows)
            if batch is not None:
                return batch
        return None

    def forget_acked(self, acked: dict[str, int]) -> None:
        """Mark every sealed segment and manifest the broker acknowledged in full (at start: a long season's
        finished segments are then never opened again)."""
        for name, end in acked.items():
            if name not in self._done:
                self.mark_done(name, end)

    def mark_done(self, segment: str, acked_to: int) -> None:
        """Forget a sealed segment once all of it is acknowledged (keeps polling cheap over a long season)."""
        if segment.startswith(BOOTS_DIR + "/"):
            self._done.add(segment)
            return
        path = self.root / segment
        if not path.exists():  # never sealed: an earlier boot's open segment is as final as a sealed one
            match = SEGMENT.match(path.name)
            if match is None or match["boot"] == self.boot_id:
                return
            path = path.with_name(path.name + OPEN_SUFFIX)
        try:
            if path.stat().st_size <= acked_to:
                self._done.add(segment)
        except OSError:
            pass

    def backlog_bytes(self, acked: dict[str, int]) -> int:
        """Bytes on the card not yet acknowledged (headers included): what a reconnection will send."""
        total = 0
        for name, path, _ in self._segments():
            try:
                total += max(0, path.stat().st_size - acked.get(name, 0))
            except OSError:
                continue
        return total

    # -- internals -----------------------------------------------------------------------------------------

    def _manifests(self) -> list[str]:
        folder = self.root / BOOTS_DIR
        names = [f"{BOOTS_DIR}/{p.name}" for p in sorted(folder.glob("*.json")) if not p.name.startswith(TEMP_PREFIX)]
        return [n for n in names if n not in self._done]

    def _manifest_batch(self, name: str) -> Batch | None:
        try:
            manifest = json.loads((self.root / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("uplink: boot manifest %s unreadable (%s); not sent", name, e)
            self._done.add(name)
            return None
        return Batch(BOOTS_KIND, name, 0, 1, manifest=manifest if isinstance(manifest, dict) else {})

    def _segments(self) -> list[tuple[str, Path, bool]]:
        """(sealed card-relative name, path on the card, sealed?) of every segment not yet done, oldest first."""
        found: list[tuple[tuple[str, str, int, str], str, Path, bool]] = []
        for order, kind in enumerate(self.kinds):
            folder = self.root / kind
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            for entry in entries:
                sealed = not entry.endswith(OPEN_SUFFIX)
                final = entry if sealed else entry[: -len(OPEN_SUFFIX)]
                match = SEGMENT.match(final)
                name = f"{kind}/{final}"
                if match is None or not final.endswith(EXTENSIONS[kind]) or name in self._done:
                    continue
                key = (match["day"], match["boot"], order, match["part"])
                found.append((key, name, folder / entry, sealed))
        found.sort()
        return [(name, path, sealed) for _, name, path, sealed in found]

    def _read(self, name: str, path: Path, start: int, limit: int | None, max_rows: int) -> Batch | None:
        kind = name.split("/", 1)[0]
        try:
            with open(path, "rb") as handle:
                header = self._header(name, handle) if EXTENSIONS[kind] == "csv" else ""
                if EXTENSIONS[kind] == "csv" and not header:
                    return None  # the header line is not complete yet
                first = max(start, len(header.encode("utf-8")) + 1 if header else 0)
                end_of_data = os.fstat(handle.fileno()).st_size if limit is None else limit
                if end_of_data <= first:
                    return None
                handle.seek(first)
                data = handle.read(min(end_of_data - first, MAX_READ_BYTES))
        except FileNotFoundError:
            return None  # sealed (renamed) since it was listed: found under its final name next time
        except OSError as e:
            log.warning("uplink: cannot read %s: %s", path, e)
            return None
        lines = data.split(b"\n")[:-1][:max_rows]  # whole lines only: a torn tail waits for its newline
        if not lines:
            return None
        end = first + sum(len(line) + 1 for line in lines)
        return Batch(kind, name, first, end, [line.decode("utf-8", errors="replace") for line in lines], header)

    def _header(self, name: str, handle: object) -> str:
        if name not in self._headers:
            line = handle.readline()  # type: ignore[attr-defined]
            if not line.endswith(b"\n"):
                return ""
            self._headers[name] = line[:-1].decode("utf-8", errors="replace")
        return self._headers[name]
