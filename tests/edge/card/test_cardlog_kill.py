"""Power-loss stand-in: the real writer in a child process is ``kill -9``'d at 200 random moments.

A zygote process (a fresh interpreter with the writer imported) forks one writer per round; each writer logs
continuously into the same card, one boot per round, and appends ``flushed <rows> <batches>`` to a report
file after every ``flush()`` returns. The test kills it after a random delay. Afterwards every file must parse,
every reported (fsync'd) row must be there exactly once, every clip must be whole, and the collector must
ingest all of it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from desk.collect.database import connect
from desk.collect.ingest import collect
from edge.card.guano import read_guano
from edge.card.segments import read_csv_segment, read_jsonl_segment

ROUNDS = 200
STARTUP_KILL_SHARE = 0.25
"""A quarter of the writers die during start-up (manifest, first files) at a random time after the fork."""
MAX_STARTUP_S = 0.02
MAX_FLUSHES_BEFORE_KILL = 10
"""The others die a random 0..3 ms after a random number of confirmed flushes: busy, whatever the machine's speed."""
MAX_EXTRA_S = 0.003
PROGRESS_TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parents[3]
HOP = 240_000
LABELS = ("toad", "wood frog", "barred owl")

ZYGOTE = r"""
import os, sys
from datetime import datetime, timezone
from pathlib import Path
from edge.stream.detector import DetectionEvent
from edge.card.cardlog import CardLog, UnitIdentity

import numpy as np
HOP, LABELS = 240_000, ("toad", "wood frog", "barred owl")
CLIP = np.full(9_600, 0.25, np.float32)

def write_forever(card, report):
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    log = CardLog(Path(card), UnitIdentity("KILL-01", "bench"), 48_000, {"config_hash": "k"})
    os.write(fd, f"boot {log.boot_id}\n".encode())
    log.open_stream(datetime(2024, 5, 1, 23, 58, tzinfo=timezone.utc), 0, "ntp")
    rows = batches = 0
    while True:
        events = [DetectionEvent(i * HOP, i * HOP + 2 * HOP, LABELS[i % 3], 1.0 + i % 7, 0.1, i * HOP, 2)
                  for i in range(rows, rows + 1 + batches % 9)]
        log.detections(events)
        log.effort(rows * HOP, (rows + len(events)) * HOP)
        log.event("batch", sample=rows * HOP, batch=batches)
        if batches % 4 == 0:
            log.health({"temperature_c": 40.0})
        if batches % 3 == 0:
            log.save_clip(events[0], CLIP, events[0].start_sample)
        rows += len(events)
        batches += 1
        log.flush()
        os.write(fd, f"flushed {rows} {batches}\n".encode())

for line in sys.stdin:
    card, report = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(card, report)
        finally:
            os._exit(1)
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def read_report(path: Path) -> tuple[str | None, int, int]:
    """(boot id, rows confirmed fsync'd, batches confirmed) from one writer's report file."""
    boot, rows, batches = None, 0, 0
    if not path.exists():
        return boot, rows, batches
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["boot"] and len(parts) == 2:
            boot = parts[1]
        elif parts[:1] == ["flushed"] and len(parts) == 3:
            rows, batches = int(parts[1]), int(parts[2])
    return boot, rows, batches


def wait_for_flushes(report: Path, flushes: int) -> None:
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while not report.exists() or report.read_bytes().count(b"flushed") < flushes:
        assert time.monotonic() < deadline, f"writer made no progress within {PROGRESS_TIMEOUT_S} s"
        time.sleep(0.0005)


def test_kill_9_at_200_random_moments_loses_no_fsynced_row(tmp_path: Path) -> None:
    card, reports = tmp_path / "card", tmp_path / "reports"
    reports.mkdir()
    rng = random.Random(20240501)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    assert zygote.stdin is not None and zygote.stdout is not None
    required_flushes = {}
    try:
        for round_no in range(ROUNDS):
            report = reports / f"{round_no}.txt"
            zygote.stdin.write(f"{card} {report}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            if rng.random() < STARTUP_KILL_SHARE:
                time.sleep(rng.uniform(0, MAX_STARTUP_S))
            else:
                required_flushes[round_no] = rng.randint(1, MAX_FLUSHES_BEFORE_KILL)
                wait_for_flushes(report, required_flushes[round_no])
                time.sleep(rng.uniform(0, MAX_EXTRA_S))
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)

    detections: dict[str, list[tuple[int, str]]] = defaultdict(list)
    batches_seen: dict[str, list[int]] = defaultdict(list)
    for path in sorted((card / "detections").iterdir()):
        segment = read_csv_segment(path)
        assert not segment.problems, segment.problems
        index = segment.header.index
        for row in segment.rows:
            detections[row[index("boot_id")]].append((int(row[index("start_sample")]), row[index("label")]))
    for folder in ("events", "health"):
        for path in sorted((card / folder).iterdir()):
            segment = read_jsonl_segment(path)
            assert not segment.problems, segment.problems
            for record in segment.records if folder == "events" else ():
                if record["kind"] == "batch":
                    batches_seen[str(record["boot_id"])].append(int(record["batch"]))

    for round_no in range(ROUNDS):
        boot, rows, batches = read_report(reports / f"{round_no}.txt")
        assert batches >= required_flushes.get(round_no, 0)
        if boot is None:
            continue
        found = detections.get(boot, [])
        assert len(found) == len(set(found)), f"boot {boot}: duplicated rows"
        assert len(found) >= rows, f"boot {boot}: {rows} rows were fsync'd but only {len(found)} are on the card"
        assert found == [(i * HOP, LABELS[i % 3]) for i in range(len(found))], f"boot {boot}: rows out of order"
        seen = batches_seen.get(boot, [])
        assert seen == list(range(len(seen))) and len(seen) >= batches

    clips = sorted((card / "clips").rglob("*.flac"))
    assert len(clips) > 50
    for clip in clips:  # a clip is either complete (renamed after fsync) or absent
        audio, _ = sf.read(clip, dtype="float32")
        assert audio.shape == (9_600,) and np.allclose(audio, 0.25, atol=1e-4)
        assert read_guano(clip)["Serial"] == "KILL-01"

    total_rows = sum(len(rows) for rows in detections.values())
    result = collect([card], tmp_path / "db.duckdb")
    assert result.added["detections"] == total_rows
    assert not [f for f in result.findings if f.check == "lines" and f.severity != "info"]
    con = connect(tmp_path / "db.duckdb", read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM detections").fetchall()[0][0] == total_rows
        assert con.execute("SELECT count(DISTINCT boot_id) FROM detections").fetchall()[0][0] == len(detections)
    finally:
        con.close()
    assert collect([card], tmp_path / "db.duckdb").added.get("detections", 0) == 0, "re-collecting adds nothing"
