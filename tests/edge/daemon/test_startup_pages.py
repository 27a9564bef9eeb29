"""Start-up file pages: only clean, read-only, private file mappings are unmapped, and they read back the same."""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import pytest

from edge.daemon import runner
from edge.daemon.startup_pages import SMAPS, drop_clean_file_pages, file_mappings
from edge.ops.setup import InputOptions, build_daemon
from tests.edge.daemon.test_daemon import unit_config

PAGES = 64
PAGE = mmap.PAGESIZE


def resident_kb(start: int) -> tuple[int, int]:
    """(Rss, Anonymous) kB of this process's mapping that starts at ``start``."""
    mapping = next(m for m in file_mappings(SMAPS.read_text()) if m.start == start)
    return mapping.rss_kb, mapping.anonymous_kb


def address(view: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_only_clean_file_pages_are_unmapped_and_they_read_back_the_same(tmp_path: Path) -> None:
    data = bytes(range(256)) * (PAGES * PAGE // 256)
    path = tmp_path / "library.bin"
    path.write_bytes(data)
    with path.open("rb") as f:
        clean = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    with path.open("r+b") as f:  # written, then made read-only: what the loader does to relocated data (RELRO)
        relocated = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        writable = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    relocated[PAGE] = writable[PAGE] = 0xFF
    relocated_at = address(relocated)
    mprotect = ctypes.CDLL(None).mprotect
    mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert mprotect(relocated_at, len(data), mmap.PROT_READ) == 0
    assert sum(clean[::PAGE]) + sum(relocated[::PAGE]) + sum(writable[::PAGE])  # every page resident
    clean_at = next(m.start for m in file_mappings(SMAPS.read_text()) if m.path == str(path) and m.perms == "r--p"
                    and m.anonymous_kb == 0)
    assert resident_kb(clean_at) == (PAGES * PAGE // 1024, 0)
    before = {at: resident_kb(at) for at in (relocated_at, address(writable))}

    assert drop_clean_file_pages() >= PAGES * PAGE // 1024
    assert resident_kb(clean_at)[0] == 0  # unmapped from this process ...
    assert clean[:] == data  # ... and mapped again from the page cache on the next read
    assert {at: resident_kb(at) for at in before} == before  # a private page anywhere: left alone
    assert relocated[PAGE] == writable[PAGE] == 0xFF and relocated[0] == data[0]


def test_a_low_memory_daemon_unmaps_start_up_pages_before_and_after_its_first_window(
        example_bundle: Path, example_labels: tuple[Path, Path], toad_in_night: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runner, "drop_clean_file_pages", lambda: calls.append(0) or 0)
    for low_memory in (False, True):
        calls.clear()
        config = unit_config(example_bundle, example_labels, tmp_path / str(low_memory),
                             **{"model.low_memory": low_memory})
        daemon = build_daemon(config, InputOptions(toad_in_night, fast=True))
        daemon.source.open = lambda start, opened=daemon.source.open: (  # type: ignore[method-assign]
            calls.append(1), opened(start))[1]
        assert daemon.run() == 0
        assert calls == ([0, 1, 0] if low_memory else [1])  # once before the stream opens, once after a window
