"""Start → first analysed window of the field daemon (INT8, full-size model, a hardware profile's settings).

The daemon tells systemd ``READY=1`` once its first window has been analysed (edge/daemon/notify.py). This
benchmark plays systemd: it listens on a ``NOTIFY_SOCKET`` of its own, starts ``biolingual-edge run --input REC
--fast --profile PROFILE`` and, when ``READY=1`` arrives, takes the wall time since the start, the daemon's CPU
time (user + sys, ``/proc/PID/stat``) and the bytes it has read (``rchar``, ``/proc/PID/io``), then stops it
(SIGINT). ``--baseline-repo`` runs another checkout's code the same way, alternated round by round, so both
are measured under the same load (compare CPU time when the machine is busy). ``--cold`` evicts the bundle's
files from the page cache before every start (``posix_fadvise(DONTNEED)`` on those files only), as after a
reboot, where reading the bundle from an SD card is what a start waits for.

    python benchmarks/boot_time.py [--workdir /tmp/scale-bench] [--rounds 5] [--cold] [--profile raspberry-pi-4]
        [--baseline-repo /path/to/checkout-before] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from benchmarks.shared_audio import AUDIO_HELP, shared_audio  # noqa: E402

RATE = 48_000
CLIP_S = 30
"""Length of the recording each start analyses (only its first window matters)."""
READY_TIMEOUT_S = 300.0
POLL_S = 0.2
"""How often the READY=1 listener looks whether it was closed."""
MIB = 1 << 20


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_chars(pid: int) -> int:
    """Bytes the process has read with read()-like calls so far (page cache or not)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def evict(folder: Path) -> None:
    """Drop ``folder``'s files (only those) from the page cache."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class ReadyWatch:
    """A ``NOTIFY_SOCKET`` of our own, as systemd gives a service: notes when ``READY=1`` arrives, in seconds since
    :meth:`start` (the daemon sends it once its first window has been analysed: edge/daemon/notify.py)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ready-")
        self.address = str(Path(self._folder.name) / "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
        self._socket.settimeout(POLL_S)
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self.started = time.perf_counter()
        self.ready_s: float | None = None
        """Seconds from :meth:`start` to ``READY=1``; None until it arrives."""

    def __enter__(self) -> ReadyWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        """What the daemon's environment needs to tell us."""
        return {"NOTIFY_SOCKET": self.address}

    def start(self) -> None:
        """The clock starts now (call it just before starting the daemon)."""
        self.started = time.perf_counter()
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Whether ``READY=1`` arrived within ``timeout`` seconds."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()
        self._folder.cleanup()

    def _listen(self) -> None:
        # Read until closed, not just until READY=1: the daemon sends WATCHDOG=1 after every window, and once the
        # socket's queue is full its next send blocks (a daemon that keeps running stalled mid-run).
        while not self._closed.is_set():
            try:
                message = self._socket.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                continue
            if not self._ready.is_set() and "READY=1" in message.splitlines():
                self.ready_s = time.perf_counter() - self.started
                self._ready.set()


def one_start(repo: Path, command: list[str], bundle: Path, cold: bool) -> dict[str, float]:
    """Start the daemon once; wall s, CPU s and MB read at its READY=1."""
    if cold:
        evict(bundle)
    with ReadyWatch() as watch:
        env = {**os.environ, "PYTHONPATH": str(repo), **watch.env()}
        watch.start()
        daemon = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        if not watch.wait(READY_TIMEOUT_S):
            daemon.kill()
            raise SystemExit(f"no READY=1 in {READY_TIMEOUT_S:g} s:\n{daemon.communicate()[1][-2000:]}")
        assert watch.ready_s is not None
        figures = {"wall_s": watch.ready_s, "cpu_s": cpu_s(daemon.pid), "read_mb": read_chars(daemon.pid) / MIB}
        daemon.send_signal(signal.SIGINT)
        _, stderr = daemon.communicate()
    if daemon.returncode not in (0, -signal.SIGINT, 130):
        raise SystemExit(f"daemon failed ({daemon.returncode}):\n{stderr[-2000:]}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--audio", type=Path, help=AUDIO_HELP)
    parser.add_argument("--profile", default="raspberry-pi-4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="evict the bundle from the page cache before each start")
    parser.add_argument("--baseline-repo", type=Path, help="also start this checkout's daemon, alternated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.audio = args.audio or shared_audio()

    import soundfile as sf
    from analyze_scale import bench_inputs
    from daemon_memory import ensure_prompts

    from edge.ops.bench import machine_info

    bundle, labels, recording = bench_inputs(args.workdir, args.audio, 10)
    ensure_prompts(bundle, args.workdir / "checkpoint", args.workdir)
    clip = args.workdir / f"boot-{CLIP_S}s.wav"
    samples, rate = sf.read(recording, frames=CLIP_S * RATE, dtype="int16")
    sf.write(clip, samples, rate, subtype="PCM_16")
    bundle_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / MIB
    repos = {"this checkout": REPO} | ({"baseline": args.baseline_repo.resolve()} if args.baseline_repo else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in repos}
    for _ in range(args.rounds):
        for name, repo in repos.items():
            log_dir = args.workdir / "boot-card"
            shutil.rmtree(log_dir, ignore_errors=True)
            command = [sys.executable, "-m", "edge", "run", "--input", str(clip), "--fast", "--labels", str(labels),
                       "--bundle", str(bundle), "--log-dir", str(log_dir), "--threshold", "-0.4",
                       "--precision", "int8", "--force-precision", "--set", "unit.unit_id=bench",
                       "--profile", args.profile]
            runs[name].append(one_start(repo, command, bundle, args.cold))
            print(json.dumps({name: runs[name][-1]}), file=sys.stderr)
    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['cores']} cores; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; bundle {bundle_mb:.0f} MB "
          f"({'evicted from the page cache before each start' if args.cold else 'in the page cache'})")
    print(f"\n| start → first analysed window (READY=1), INT8 full size, --profile {args.profile}, "
          f"median of {args.rounds} | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for key, label in (("wall_s", "wall s"), ("cpu_s", "CPU s (user+sys)"), ("read_mb", "MB read (rchar)")):
        print(f"| {label} | " + " | ".join(f"{statistics.median(r[key] for r in rs):.2f}"
                                          for rs in runs.values()) + " |")
    if args.json:
        report: dict[str, Any] = {"load": os.getloadavg(), "cold": args.cold, "runs": runs}
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
