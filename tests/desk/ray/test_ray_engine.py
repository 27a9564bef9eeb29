"""`analyze --engine ray`: a real local Ray job equals the local pool, listens on loopback only, and goes away."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge.batch.analyze import AnalyzeOptions, RunOptions, analyze_paths
from edge.batch.piece_analysis import PieceResult
from edge.batch.pieces import Piece
from edge.batch.writer import WORKLOG_NAME
from tests.desk.ray.cluster import need_ray

need_ray()

LISTEN_PID = re.compile(r"pid=(\d+)")


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class ListeningSockets:
    """A :class:`edge.batch.writer.PieceSink` that notes, while Ray runs, where our Ray processes listen."""

    name = "listening"

    def __init__(self, already_running: set[int]) -> None:
        self.already_running = already_running
        """Our child processes before the job (e.g. multiprocessing's resource tracker): not Ray's."""
        self.sockets: list[tuple[str, int]] = []
        self.pids: set[int] = set()
        self.embedding_rows: list[int] = []

    def resume(self, state: Any) -> None:
        assert state is None  # a fresh run

    def write(self, piece: Piece, result: PieceResult) -> None:
        self.embedding_rows.append(0 if result.embeddings is None else result.embeddings.shape[0])
        if self.pids:
            return
        self.pids = descendants(os.getpid()) - self.already_running
        listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines():
            pids = {int(p) for p in LISTEN_PID.findall(line)}
            if pids & (self.pids | {os.getpid()}):  # the driver (this process) listens too
                self.sockets.append((line.split()[3], min(pids)))

    def checkpoint(self) -> Any:
        return len(self.embedding_rows)

    def close(self) -> None:
        pass


def test_ray_job_equals_local_pool_on_loopback_only(toad_in_night: Path, shared_audio: Path, example_bundle: Path,
                                                    example_labels: tuple[Path, Path], tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "a.wav").write_bytes(toad_in_night.read_bytes())
    (archive / "b.wav").write_bytes((shared_audio / "Nachtzuster__BirdNET-Pi/Pica pica_30s.wav").read_bytes())
    options = AnalyzeOptions(top_k=2)
    local = analyze_paths([archive], example_labels[0], example_bundle, tmp_path / "local", options,
                          run=RunOptions(workers=1, piece_s=20))
    sink = ListeningSockets(descendants(os.getpid()))
    remote = analyze_paths([archive], example_labels[0], example_bundle, tmp_path / "ray", options,
                           run=RunOptions(workers=2, piece_s=20, engine="ray"), sinks=[sink], keep_embeddings=True)
    assert (remote.detections, remote.pieces, remote.failures) == (local.detections, 5, [])
    for name in ("detections.csv", "a.BioLingual.selection.table.txt", "b.BioLingual.selection.table.txt"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert sink.embedding_rows == [4, 4, 3, 4, 1]  # each window's embedding reached the single writer
    assert sink.sockets, "no listening Ray sockets were seen while the job ran"
    assert all(address.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for address, _ in sink.sockets), sink.sockets
    assert not sink.pids & descendants(os.getpid()), "Ray processes outlived the job"
    assert (tmp_path / "ray" / WORKLOG_NAME).read_text().count("\n") == 1 + 5


def test_a_private_instance_that_does_not_start_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray raises a bare Exception when its raylet misses the start-up deadline (a busy machine)."""
    import ray

    from desk.ray_engine import connect
    from edge.errors import BackendError

    def late(*args: Any, **kwargs: Any) -> None:
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", late)
    with pytest.raises(BackendError, match=r"the private Ray instance did not start \(Exception: The current node "
                                           r"timed out during startup"), connect(None, cpus=1):
        pass
