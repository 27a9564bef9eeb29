"""A FUSE filesystem that forgets what was not fsync'd when the power is cut (the model of LazyFS).

Run as ``python -m tests.powercut.lazyfs MOUNTPOINT``; it is steered by one-line commands on stdin:

``arm N MODE SEED``  cut the power at the N-th mutating operation from now (that operation fails, not applied)
``cut MODE SEED``    cut the power now
``state``            reply ``ops=<mutating ops since the last arm> cut=<0|1>``
``revive``           power back on: the card now holds exactly what survived; older file handles stay dead
``fail N ERRNO``     from the N-th mutating operation from now the card refuses changes with ERRNO (a name):
                     ``ENOSPC`` (full) refuses what needs room (create, mkdir, write, growing a file) and lets the
                     rest through (unlink, rename, fsync, shrinking); ``EROFS`` (read-only) refuses every change.
                     Reads go on; ``revive`` ends it.

On a cut every file goes back to the bytes it had at its last ``fsync`` and every directory to the entries it had
at its last ``fsync`` of the directory (create, rename, unlink, mkdir not fsync'd on their directory are undone;
files only reachable through undone entries are gone). MODE ``lazy`` keeps nothing else; MODE ``torn`` also keeps
a random prefix of each file's unsynced appended bytes, as a disk that wrote back part of its cache would. After
the cut every operation fails with ``EIO`` until ``revive``, as if the writer had died with the power.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mfusepy

BLOCK_BYTES = 4096
FREE_BLOCKS = 16 * 1024 * 1024
"""64 GiB free, so the storage governor never holds clips back."""
MODES = ("lazy", "torn")


@dataclass
class Node:
    """A file (``entries is None``) or a directory, with its live and its durable (last fsync'd) state."""

    is_dir: bool
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    entries: dict[str, Node] = field(default_factory=dict)
    durable_entries: dict[str, Node] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)


@dataclass(frozen=True)
class Handle:
    node: Node
    generation: int
    append: bool


def _eio() -> OSError:
    return mfusepy.FuseOSError(errno.EIO)


class ForgetfulFS(mfusepy.Operations):
    """In-memory filesystem whose durable state is exactly what was fsync'd (data) and fsyncdir'd (names)."""

    use_ns = True

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.root = Node(True)
        self.handles: dict[int, Handle] = {}
        self.next_handle = 1
        self.generation = 0
        self.dead = False
        self.ops = 0
        self.cut_at: int | None = None
        self.cut_mode = "lazy"
        self.fail_at: int | None = None
        self.fail_errno = errno.ENOSPC
        self.rng = random.Random(0)
        self.ready = threading.Event()

    # -- power ------------------------------------------------------------------------------------------------

    def arm(self, ops: int, mode: str, seed: int) -> None:
        with self._mutex:
            self.ops, self.cut_at, self.cut_mode, self.rng = 0, ops, mode, random.Random(seed)

    def cut(self, mode: str, seed: int) -> None:
        with self._mutex:
            self.cut_mode, self.rng = mode, random.Random(seed)
            self._cut()

    def revive(self) -> None:
        with self._mutex:
            self.dead, self.cut_at, self.ops, self.fail_at = False, None, 0, None
            self.generation += 1

    def fail(self, ops: int, errno_name: str) -> None:
        with self._mutex:
            self.ops, self.fail_at, self.fail_errno = 0, ops, getattr(errno, errno_name)

    def state(self) -> tuple[int, bool]:
        """(mutating operations since the last arm, whether the power is off)."""
        with self._mutex:
            return self.ops, self.dead

    def _cut(self) -> None:
        """Everything not durable is forgotten; only what the durable names still reach survives."""
        self._restore(self.root)
        self.dead, self.cut_at = True, None

    def _restore(self, node: Node) -> None:
        if node.is_dir:
            node.entries = dict(node.durable_entries)
            for child in node.entries.values():
                self._restore(child)
            return
        kept = b""
        unsynced = len(node.data) - len(node.durable)
        if self.cut_mode == "torn" and unsynced > 0 and node.data.startswith(node.durable):
            kept = bytes(node.data[len(node.durable):len(node.durable) + self.rng.randint(0, unsynced)])
        node.data = bytearray(node.durable + kept)
        node.durable = bytes(node.data)

    def _mutating(self, needs_room: bool = True) -> None:
        """Called (under the lock) before every operation that changes the card; may cut the power here, or
        refuse the change once the card is failing (``needs_room``: a full card refuses it too)."""
        if self.dead:
            raise _eio()
        self.ops += 1
        if self.cut_at is not None and self.ops >= self.cut_at:
            self._cut()
            raise _eio()
        if self.fail_at is not None and self.ops >= self.fail_at and \
                (needs_room or self.fail_errno != errno.ENOSPC):
            raise mfusepy.FuseOSError(self.fail_errno)

    def _alive(self) -> None:
        if self.dead:
            raise _eio()

    # -- lookup -------------------------------------------------------------------------------------------------

    def _node(self, path: str) -> Node:
        node = self.root
        for part in path.strip("/").split("/") if path.strip("/") else ():
            if not node.is_dir or part not in node.entries:
                raise mfusepy.FuseOSError(errno.ENOENT)
            node = node.entries[part]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._node(head or "/")
        if not parent.is_dir:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return parent, name

    def _handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None or handle.generation != self.generation:
            raise _eio()
        return handle

    def _open(self, node: Node, flags: int) -> int:
        fh = self.next_handle
        self.next_handle += 1
        self.handles[fh] = Handle(node, self.generation, bool(flags & os.O_APPEND))
        return fh

    # -- FUSE operations --------------------------------------------------------------------------------------

    def init(self, path: str) -> None:
        self.ready.set()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            self._alive()
            node = self._handle(fh).node if fh else self._node(path)
            mode = (stat.S_IFDIR | 0o755) if node.is_dir else (stat.S_IFREG | 0o644)
            return {"st_mode": mode, "st_nlink": 2 if node.is_dir else 1, "st_size": len(node.data),
                    "st_mtime": node.mtime_ns, "st_ctime": node.mtime_ns, "st_atime": node.mtime_ns,
                    "st_uid": os.getuid(), "st_gid": os.getgid(), "st_blksize": BLOCK_BYTES,
                    "st_blocks": (len(node.data) + 511) // 512}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._mutex:
            self._alive()
            return [".", "..", *self._node(path).entries]

    def opendir(self, path: str) -> int:
        with self._mutex:
            self._alive()
            node = self._node(path)
            if not node.is_dir:
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return self._open(node, 0)

    def releasedir(self, path: str | None, fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            self._mutating(needs_room=False)
            node = self._handle(fh).node
            node.durable_entries = dict(node.entries)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            self._mutating()
            parent, name = self._parent(path)
            if name in parent.entries:
                raise mfusepy.FuseOSError(errno.EEXIST)
            parent.entries[name] = Node(True)
        return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            self._mutating(needs_room=False)
            parent, name = self._parent(path)
            node = self._node(path)
            if node.entries:
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
        return 0

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        with self._mutex:
            self._mutating()
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                node = parent.entries[name] = Node(False)
            return self._open(node, flags)

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            self._alive()
            return self._open(self._node(path), flags)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            self._alive()
            return bytes(self._handle(fh).node.data[offset:offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            self._mutating()
            handle = self._handle(fh)
            node = handle.node
            if handle.append:
                offset = len(node.data)
            if offset > len(node.data):
                node.data.extend(b"\0" * (offset - len(node.data)))
            node.data[offset:offset + len(data)] = data
            node.mtime_ns = time.time_ns()
            return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._mutex:
            node = self._handle(fh).node if fh else self._node(path or "/")
            self._mutating(needs_room=length > len(node.data))
            del node.data[length:]
            node.data.extend(b"\0" * (length - len(node.data)))
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            self._mutating(needs_room=False)
            node = self._handle(fh).node
            node.durable = bytes(node.data)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            self._mutating(needs_room=False)
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            node = self._node(old)
            del old_parent.entries[old_name]
            new_parent.entries[new_name] = node
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            self._mutating(needs_room=False)
            parent, name = self._parent(path)
            self._node(path)
            del parent.entries[name]
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        with self._mutex:
            self._alive()
        return {"f_bsize": BLOCK_BYTES, "f_frsize": BLOCK_BYTES, "f_blocks": 2 * FREE_BLOCKS,
                "f_bfree": FREE_BLOCKS, "f_bavail": FREE_BLOCKS, "f_files": 1 << 20, "f_ffree": 1 << 20,
                "f_favail": 1 << 20, "f_namemax": 255}

    def utimens(self, path: str, times: Any = None) -> int:
        return 0

    def chmod(self, path: str, mode: int) -> int:
        return 0

    def access(self, path: str, amode: int) -> int:
        return 0


def serve_commands(fs: ForgetfulFS) -> None:
    """Answer the test's commands (one per line) until stdin closes."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, args = words[0], words[1:]
        if command == "arm":
            fs.arm(int(args[0]), args[1], int(args[2]))
        elif command == "cut":
            fs.cut(args[0], int(args[1]))
        elif command == "revive":
            fs.revive()
        elif command == "fail":
            fs.fail(int(args[0]), args[1])
        elif command == "state":
            ops, dead = fs.state()
            print(f"ops={ops} cut={int(dead)}", flush=True)
            continue
        else:
            print(f"unknown command {command!r}", flush=True)
            continue
        print("ok", flush=True)


def main(mountpoint: str) -> None:
    fs = ForgetfulFS()

    def announce() -> None:
        fs.ready.wait()
        print("ready", flush=True)
        serve_commands(fs)

    threading.Thread(target=announce, daemon=True).start()
    mfusepy.FUSE(fs, mountpoint, foreground=True, nothreads=True, hard_remove=True, direct_io=True,
                 attr_timeout=0, entry_timeout=0, negative_timeout=0, fsname="lazyfs")


if __name__ == "__main__":
    main(sys.argv[1])
