"""Power-cut harness: mount :mod:`tests.powercut.lazyfs`, record what the writer acknowledged, check what survived.

The :class:`Ledger` spies on the two durability primitives every card writer uses (``AppendSegment.append`` from
:mod:`edge.card.segments` and ``atomic_write_with`` from :mod:`edge.durable`, which ``atomic_write`` goes through):
the real functions run, and when one returns, its bytes were promised durable. A new kind of segment (window
embeddings, ...) written through those primitives is covered without change; a new folder the desk reader does not
parse gets a reader in :data:`EXTRA_READERS`. :func:`switch_fsync_off` removes one fsync from all of them, for the
campaigns that must fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import soundfile as sf

from desk.collect.cards import CardContents, read_card
from edge import durable
from edge.card import segments
from edge.card.cardformat import CLIPS_DIR, TEMP_PREFIX
from edge.card.embedformat import EMBEDDINGS_DIR, read_embedding_segment
from edge.card.guano import read_guano

REPO = Path(__file__).resolve().parents[2]
MOUNT_TIMEOUT_S = 30.0


class PowerSwitch:
    """The mounted forgetful filesystem and its power switch (a ``lazyfs`` child process)."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._process = subprocess.Popen([sys.executable, "-m", "tests.powercut.lazyfs", str(mountpoint)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":
            self.close()
            pytest.skip("cannot mount a FUSE filesystem here (needs /dev/fuse, fuse3 and the mfusepy package)")

    def _ask(self, command: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline().strip()

    def arm(self, operations: int, mode: str, seed: int) -> None:
        """Cut the power at the ``operations``-th change to the card from now."""
        assert self._ask(f"arm {operations} {mode} {seed}") == "ok"

    def cut(self, mode: str, seed: int) -> None:
        assert self._ask(f"cut {mode} {seed}") == "ok"

    def fail(self, operations: int, errno_name: str) -> None:
        """From the ``operations``-th change from now the card refuses changes: ``ENOSPC`` (full, deleting still
        works) or ``EROFS`` (read-only); reads go on. :meth:`revive` ends it."""
        assert self._ask(f"fail {operations} {errno_name}") == "ok"

    def is_off(self) -> bool:
        return self._ask("state").endswith("cut=1")

    def operations(self) -> int:
        """Changes to the card since the last :meth:`arm`."""
        return int(self._ask("state").split()[0].removeprefix("ops="))

    def revive(self) -> None:
        """Power back: the writer of the last boot is dead; its open files are closed here, as a reboot would."""
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{name}").startswith(str(self.mountpoint)):
                    os.close(int(name))
        assert self._ask("revive") == "ok"

    def close(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True, check=False)
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=MOUNT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@contextlib.contextmanager
def power_switch(mountpoint: Path) -> Iterator[PowerSwitch]:
    switch = PowerSwitch(mountpoint)
    try:
        yield switch
    finally:
        switch.close()


@dataclass
class SegmentRecord:
    """What the writer appended to one segment: acknowledged bytes, and bytes tried since the last acknowledgement."""

    open_path: str
    header: bytes
    acked: bytearray = field(default_factory=bytearray)
    tried: bytearray = field(default_factory=bytearray)


Setter = Callable[[object, str, Any], None]
"""``setattr``, or ``monkeypatch.setattr`` in a test (undone at its end)."""

FSYNC_KINDS = ("file", "directory")
FSYNC_OFF_VARIABLE = "POWERCUT_FSYNC_OFF"
"""Set to one of :data:`FSYNC_KINDS` for ``tests.powercut.acked_run``: that run's writer loses that fsync."""


def switch_fsync_off(kind: str, patch: Setter) -> None:
    """Remove one kind of fsync from every durable write (:mod:`edge.durable`, and the card's append segments,
    which flush through the same ``os``); a power-cut campaign run so must fail, or it proves nothing.

    ``file``: file contents are no longer fsync'd (folders still are); ``directory``: renames and creations are no
    longer fsync'd on their folder.
    """
    if kind == "directory":
        patch(durable, "fsync_path", lambda path: None)
        return
    assert kind == "file", kind
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            real_fsync(fd)

    patch(durable.os, "fsync", fsync)


class Ledger:
    """Every write the card writer acknowledged as durable (the real functions run underneath).

    With ``journal`` every step is also appended to that file (outside the card) as it happens, so a writer in
    another process can be killed at any moment and its ledger rebuilt with :meth:`replay`.
    """

    def __init__(self, journal: Path | None = None) -> None:
        self.segments: dict[str, SegmentRecord] = {}
        self.files: dict[str, str] = {}
        """Atomically written file -> sha256 of the acknowledged bytes."""
        self._journal = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if journal else None

    def tried(self, final: str, open_path: str, header: bytes, data: bytes) -> None:
        self._log({"op": "try", "final": final, "open": open_path, "header": header.hex(), "data": data.hex()})
        record = self.segments.setdefault(final, SegmentRecord(open_path, header))
        record.tried += data

    def appended(self, final: str) -> None:
        self._log({"op": "ack", "final": final})
        record = self.segments[final]
        record.acked += record.tried
        record.tried.clear()

    def wrote(self, path: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._log({"op": "file", "path": path, "sha256": digest})
        self.files[path] = digest

    def _log(self, entry: dict[str, str]) -> None:
        if self._journal is not None:
            os.write(self._journal, (json.dumps(entry) + "\n").encode())

    @classmethod
    def replay(cls, journals: list[Path]) -> Ledger:
        """The ledger of writers that journaled to ``journals`` (a line torn by their death is ignored)."""
        ledger = cls()
        for journal in journals:
            for line in journal.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry["op"] == "try":
                    ledger.tried(entry["final"], entry["open"], bytes.fromhex(entry["header"]),
                                 bytes.fromhex(entry["data"]))
                elif entry["op"] == "ack":
                    ledger.appended(entry["final"])
                else:
                    ledger.files[entry["path"]] = entry["sha256"]
        return ledger

    def install(self, patch: Setter) -> None:
        """Spy on ``AppendSegment.append`` and ``atomic_write_with`` (``atomic_write`` goes through it; also where a
        module imported either by name)."""
        original_append = segments.AppendSegment.append
        original_atomic = durable.atomic_write_with

        def append(segment: segments.AppendSegment, data: bytes) -> None:
            final = str(segment.final_path)
            self.tried(final, str(segment.open_path), segment.header, data)
            original_append(segment, data)
            self.appended(final)

        def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
            original_atomic(path, write)
            self.wrote(str(path), Path(path).read_bytes())  # what it wrote piece by piece, fsynced and renamed

        patch(segments.AppendSegment, "append", append)
        patch(durable, "atomic_write_with", atomic_write_with)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("edge.") and \
                    getattr(module, "atomic_write_with", None) is original_atomic:
                patch(module, "atomic_write_with", atomic_write_with)

    def losses(self, card: Path, copy: Path | None = None) -> list[str]:
        """Acknowledged bytes under ``card`` not there exactly as acknowledged (call with the power back on).

        ``copy``: look in this copy of the card instead (taken after the cut, as at the desk).
        """
        under = f"{card}/"

        def where(name: str) -> Path:
            return copy / name[len(under):] if copy is not None else Path(name)

        problems = []
        for final, record in self.segments.items():
            if final.startswith(under):
                problems.extend(_segment_losses(where(final), replace(record, open_path=str(where(record.open_path)))))
        for name, digest in self.files.items():
            if not name.startswith(under):
                continue
            path = where(name)
            if not path.is_file():
                problems.append(f"{path}: acknowledged (renamed after fsync) but gone")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                problems.append(f"{path}: differs from the bytes acknowledged")
        return problems


def _segment_losses(final: Path, record: SegmentRecord) -> list[str]:
    paths = [p for p in (final, Path(record.open_path)) if p.is_file()]
    if len(paths) > 1:
        return [f"{final}: both the sealed segment and its .part exist"]
    data = paths[0].read_bytes() if paths else b""
    if not record.acked:
        unacked = record.header + bytes(record.tried)
        return [] if unacked.startswith(data) else [f"{final}: holds bytes that were never written"]
    expected = record.header + bytes(record.acked)
    if not data.startswith(expected):
        kept = len(os.path.commonprefix([data, expected]))
        return [f"{final}: only {kept} of {len(expected)} acknowledged bytes survived"
                + ("" if paths else " (the file is gone)")]
    if not bytes(record.tried).startswith(data[len(expected):]):
        return [f"{final}: bytes after the acknowledged ones were never written (duplicated?)"]
    return []


def _clip_problems(card: Path) -> list[str]:
    problems = []
    for clip in sorted((card / CLIPS_DIR).rglob("*")):
        if clip.is_dir():
            continue
        try:
            sf.info(str(clip))
            read_guano(clip)
        except Exception as e:  # noqa: BLE001 (any failure to parse is the finding)
            problems.append(f"{clip}: not a readable WAV with GUANO ({e})")
    return problems


def _embedding_problems(card: Path) -> list[str]:
    """Every ``.emb`` segment parses (a torn last record is a power-cut note), and no window is there twice."""
    problems: list[str] = []
    seen: Counter[tuple[str, int, int]] = Counter()
    for path in sorted((card / EMBEDDINGS_DIR).glob("*.emb*")):
        if path.name.startswith(TEMP_PREFIX):
            continue
        segment = read_embedding_segment(path)
        problems += segment.problems
        if segment.header is not None:
            seen.update((segment.header.boot_id, int(r["stream"]), int(r["start_sample"])) for r in segment.records)
    return problems + [f"window {key} on the card {n} times" for key, n in seen.items() if n > 1]


EXTRA_READERS: dict[str, Callable[[Path], list[str]]] = {CLIPS_DIR: _clip_problems,
                                                          EMBEDDINGS_DIR: _embedding_problems}
"""Card folders :func:`read_card` does not parse, by name -> a reader returning what is wrong with them."""


def _rows(contents: CardContents) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for name, table in (("detections", contents.detections), ("effort", contents.effort)):
        counts.update((name, "\x1f".join(str(v) for v in row)) for row in table.rows)
    for name, records in (("events", contents.events), ("health", contents.health)):
        counts.update((name, repr(sorted(record.items()))) for record, _ in records)
    return counts


@dataclass(frozen=True)
class CardCheck:
    """What the desk reader found on a recovered card."""

    contents: CardContents
    problems: list[str]


def check_card(card: Path) -> CardCheck:
    """Every file parses (only power-cut notes allowed), and no row is on the card twice."""
    contents = read_card(card)
    problems = [f"{f.severity} [{f.check}] {f.message}" for f in contents.findings if f.severity != "info"]
    for folder, reader in EXTRA_READERS.items():
        if (card / folder).exists():
            problems.extend(reader(card))
    problems.extend(f"{kind} row on the card {n} times: {row[:120]}" for (kind, row), n in _rows(contents).items()
                    if n > 1)
    return CardCheck(contents, problems)


def table_sizes(contents: CardContents) -> dict[str, int]:
    return {"detections": len(contents.detections.rows), "effort": len(contents.effort.rows),
            "events": len(contents.events), "health": len(contents.health)}
