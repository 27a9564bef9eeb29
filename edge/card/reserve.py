"""Room for the last rows of a run when the card fills up: a reserved file on the card, then a fallback folder.

At boot the card log reserves ``reserve_bytes`` on the card (a file of zeros, fsync'd). If the card is full at
stop, the reserve is deleted so the rows still in memory fit; rows that still cannot be written are spilled as
JSON lines to ``<fallback_dir>/<boot_id>.unwritten.jsonl`` (on the unit's own disk), each naming its record kind:
``{"kind", "day", "line"}`` for a CSV line, ``{"kind", "day", "base64"}`` for binary records (window
embeddings), preceded once per binary kind by ``{"kind", "segment_header": base64}``, the segment header that
decodes them (:mod:`edge.card.embedformat`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from edge import durable

RESERVE_FILE = ".reserved-space"
"""Name of the reserve on the card root (deleted when the space is needed, recreated at the next boot)."""
RESERVE_BLOCK_BYTES = 64 * 1024
FALLBACK_SUFFIX = ".unwritten.jsonl"


class ReservedSpace:
    """A file on the card holding ``size_bytes`` of space that only the final flush of a run may use."""

    def __init__(self, root: Path, size_bytes: int) -> None:
        self.path = root / RESERVE_FILE
        self.size_bytes = size_bytes
        self.held = False

    def claim(self) -> bool:
        """Create (or top up) the reserve; False when the card has no room for it (the run goes on without)."""
        if self.size_bytes <= 0:
            return False
        try:
            with open(self.path, "ab") as handle:
                missing = self.size_bytes - handle.tell()
                while missing > 0:
                    missing -= handle.write(b"\0" * min(RESERVE_BLOCK_BYTES, missing))
                handle.flush()
                os.fsync(handle.fileno())
            durable.fsync_path(self.path.parent)
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        self.held = True
        return True

    def release(self) -> bool:
        """Delete the reserve so its space can take the rows still in memory; True if there was one."""
        if not self.held:
            return False
        self.held = False
        try:
            self.path.unlink()
            durable.fsync_path(self.path.parent)
        except OSError:
            return False
        return True


def spill(folder: Path, boot_id: str, rows: Iterable[tuple[str, date, bytes]],
          binary_headers: dict[str, bytes] | None = None) -> tuple[Path | None, int]:
    """Append ``(kind, day, line)`` rows to the fallback file, fsync'd; returns (path, rows written there).

    Rows of a kind in ``binary_headers`` are binary records (kept as base64 after their segment header); every
    other row is a UTF-8 line. Returns ``(None, 0)`` when the fallback folder cannot be written either (the
    rows are lost, and counted).
    """
    rows = list(rows)
    if not rows:
        return None, 0
    path = folder / f"{boot_id}{FALLBACK_SUFFIX}"
    headers = binary_headers or {}
    entries: list[dict[str, str]] = []
    for kind in dict.fromkeys(kind for kind, _, _ in rows if kind in headers):
        entries.append({"kind": kind, "segment_header": base64.b64encode(headers[kind]).decode("ascii")})
    for kind, day, line in rows:
        if kind in headers:
            entries.append({"kind": kind, "day": day.isoformat(), "base64": base64.b64encode(line).decode("ascii")})
        else:  # a line we wrote ourselves; a byte that is not UTF-8 is kept, escaped, rather than losing the row
            entries.append({"kind": kind, "day": day.isoformat(), "line": line.decode("utf-8", "surrogateescape")})
    data = b"".join(json.dumps(entry, ensure_ascii=True).encode("ascii") + b"\n" for entry in entries)
    try:
        durable.make_dirs(folder)
        durable.append_durably(path, data)
    except OSError:
        return None, 0
    return path, len(rows)
