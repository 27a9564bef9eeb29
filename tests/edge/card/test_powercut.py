"""Power loss, proven: the real card writer on a filesystem that forgets everything not fsync'd (LazyFS's model).

``kill -9`` leaves the page cache intact, so it cannot tell a missing fsync from a present one. Here the card is a
FUSE filesystem (:mod:`tests.powercut.lazyfs`) whose power is cut at a random change to the card: unsynced bytes
and directory entries not fsync'd on their directory are gone (in ``torn`` cuts a random part of the unsynced
tail survives). One writer process logs boot after boot on the same card; after every cut the power comes back,
the card is checked and the next boot starts on what survived:

* every file parses with the desk reader, and nothing is on the card twice;
* every byte the writer acknowledged (an append or an atomic write that returned) is there, as acknowledged;
* every detection and event queued before a ``flush()`` that left nothing pending is in the collected database;
* ``logs collect`` ingests every row on the card.

The same campaign with one fsync removed from the writer must fail.

A new kind of card record (issue 13's window embeddings, ...) written through ``AppendSegment`` or
``atomic_write`` is covered by the ledger as it is: add its writes to :func:`run_boot` and, for a folder the
desk reader does not parse, a reader to ``tests.powercut.harness.EXTRA_READERS``.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from desk.collect.database import connect
from desk.collect.ingest import collect
from edge.card import segments
from edge.card.cardformat import CardLogError
from edge.card.cardlog import CardLog, UnitIdentity
from edge.card.embeddings import EmbeddingSpec
from edge.card.governor import StoragePolicy
from edge.stream.detector import DetectionEvent
from tests.powercut.harness import (
    FSYNC_KINDS,
    Ledger,
    PowerSwitch,
    check_card,
    power_switch,
    switch_fsync_off,
    table_sizes,
)

RATE = 48_000
HOP = 5 * RATE
STEPS_PER_BOOT = 24
"""Two minutes of audio per boot, starting 70 s before midnight: effort minutes and the UTC day both roll over."""
BOOT_START = datetime(2024, 5, 1, 23, 58, 50, tzinfo=timezone.utc)
SEGMENT_BYTES = 3000
"""Segments are sealed at this size in the campaign (64 MiB on a unit), so rotation happens every few flushes."""
BOOTS_PER_CARD = 15
"""A fresh card every so many boots keeps each check (which reads the whole card) short."""
CUTS_WHILE_LOGGING = 100
"""Power cuts that must land while the writer is logging; cuts that land after a clean close come on top."""
MAX_BOOTS = 160
TORN_SHARE = 0.3
CLIP = np.linspace(-0.5, 0.5, 2_400, dtype=np.float32)
LABELS = ("toad", "wood frog", "barred owl")
EMBEDDING_DIM = 8
"""Window embeddings (``.emb`` records) are logged every step, through the same append segments."""
if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine", allow_module_level=True)


@dataclass
class Acknowledged:
    """What the writer's public API promised: rows queued before a flush that left nothing pending."""

    detections: set[tuple[str, int, str]] = field(default_factory=set)
    steps: set[tuple[str, int]] = field(default_factory=set)


def run_boot(card: Path, boot: int, switch: PowerSwitch, promised: Acknowledged) -> bool:
    """One boot of the writer: log until the power goes (True) or the boot ends and closes the log (False)."""
    day = BOOT_START + timedelta(days=boot)
    try:
        log = CardLog(card, UnitIdentity("CUT-01", "lab"), RATE, {"config_hash": "cut", "boot": boot},
                      boot_id=f"{day:%Y%m%dT%H%M%SZ}-{boot:06x}", wall_clock=lambda: day,
                      storage=StoragePolicy(stop_clips_below_bytes=0, thin_clips_below_bytes=0,
                                           stop_embeddings_below_bytes=0),
                      embeddings=EmbeddingSpec("fp16", EMBEDDING_DIM, "a" * 64, "b" * 64))
    except CardLogError:
        assert switch.is_off(), "only a dead card stops the log from opening"
        return True
    queued_detections: list[tuple[str, int, str]] = []
    queued_steps: list[tuple[str, int]] = []
    if switch.is_off():
        return True
    log.open_stream(day, 0, "ntp")
    log.event("start", sample=0)
    for step in range(STEPS_PER_BOOT):
        start = step * HOP
        events = [DetectionEvent(start + k, start + k + 2 * HOP, LABELS[(step + k) % 3], 1.0 + k, 0.1, start, 2)
                  for k in range(1 + step % 2)]
        log.detections(events)
        log.effort(start, start + HOP)
        log.embeddings([start], [start + HOP], np.eye(EMBEDDING_DIM, dtype=np.float32)[step % EMBEDDING_DIM][None])
        log.event("step", sample=start, step=step)
        queued_detections += [(log.boot_id, e.start_sample, e.label) for e in events]
        queued_steps.append((log.boot_id, step))
        if step % 3 == 0:
            log.health({"temperature_c": 20.0 + step})
        if step % 4 == 1:
            log.save_clip(events[0], CLIP, start)
        if step == STEPS_PER_BOOT // 2:
            log.event("gap", sample=start, end_sample=start + RATE, seconds=1.0)
        log.flush()
        if log.pending_records == 0:
            promised.detections.update(queued_detections)
            promised.steps.update(queued_steps)
        if switch.is_off():
            return True
    log.close()
    return switch.is_off()


def windows_in(db: Path) -> int:
    con = connect(db, read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM windows").fetchall()[0][0])
    finally:
        con.close()


def database_losses(db: Path, promised: Acknowledged, on_card: dict[str, int]) -> list[str]:
    """Flushed rows missing from the collected database, and tables whose size differs from the card's."""
    con = connect(db, read_only=True)
    try:
        detections = set(con.execute("SELECT boot_id, start_sample, label FROM detections").fetchall())
        steps = set(con.execute("""SELECT boot_id, CAST(json_extract(fields, '$.step') AS INTEGER) FROM events
                                   WHERE kind = 'step'""").fetchall())
        stored = {table: int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]) for table in on_card}
    finally:
        con.close()
    problems = [f"detection {d} was flushed but is not in the database"
                for d in sorted(promised.detections - detections)]
    problems += [f"event step {s} was flushed but is not in the database" for s in sorted(promised.steps - steps)]
    if stored != on_card:
        problems.append(f"collect stored {stored} rows, the card holds {on_card}")
    return problems


@pytest.fixture()
def card_power(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PowerSwitch, Ledger]]:
    monkeypatch.setattr(segments, "MAX_SEGMENT_BYTES", SEGMENT_BYTES)
    ledger = Ledger()
    ledger.install(monkeypatch.setattr)
    with power_switch(tmp_path / "mnt") as switch:
        yield switch, ledger


@dataclass(frozen=True)
class Campaign:
    problems: list[str]
    """Everything found wrong (empty: all is well)."""
    while_logging: int
    """Cuts that came while the writer was logging (the others came after a clean close)."""
    torn_tails: int
    """Segments whose last line the power cut in half (the reader skipped it)."""


def campaign(switch: PowerSwitch, ledger: Ledger, tmp_path: Path, cuts: int, seed: int,
             stop_at_first_loss: bool = False, max_boots: int | None = None) -> Campaign:
    """Cut the power at random moments until ``cuts`` of them came while logging (at most ``max_boots`` boots,
    default ``cuts``), checking the card after each."""
    rng = random.Random(seed)
    promised: dict[Path, Acknowledged] = defaultdict(Acknowledged)
    run_boot(switch.mountpoint / "calibration", 0, switch, Acknowledged())
    operations_per_boot = switch.operations()
    problems: list[str] = []
    while_logging = torn_tails = 0
    boot = 0
    while while_logging < cuts and boot < (max_boots or cuts):
        boot += 1
        card = switch.mountpoint / f"card{boot // BOOTS_PER_CARD}"
        mode = "torn" if rng.random() < TORN_SHARE else "lazy"
        switch.arm(rng.randint(1, int(operations_per_boot * 1.05)), mode, rng.randrange(1 << 30))
        while_logging += run_boot(card, boot, switch, promised[card])
        if not switch.is_off():
            switch.cut(mode, rng.randrange(1 << 30))
        switch.revive()
        if not card.exists():  # the power went before the card folder was made durable: nothing to read
            lost = [f"{len(promised[card].detections)} flushed detections lost with the card"] \
                if promised[card].detections else []
            problems += [f"cut {boot} ({mode}): {p}" for p in ledger.losses(card) + lost]
            continue
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(card, copy)  # the card as it reaches the desk: read through the filesystem once
        found = ledger.losses(card, copy)
        checked = check_card(copy)
        found += checked.problems
        torn_tails += sum("torn last line" in f.message for f in checked.contents.findings)
        db = tmp_path / f"{card.name}.duckdb"
        result = collect([copy], db, now=BOOT_START + timedelta(days=boot + 1))
        found += [f"collect: {f.message}" for f in result.findings if f.check == "rows"]
        found += database_losses(db, promised[card], table_sizes(checked.contents))
        if result.read.get("windows", 0) != windows_in(db):  # every .emb record on the card is archived, once
            found.append(f"the card holds {result.read.get('windows', 0)} window records, the archive "
                         f"{windows_in(db)}")
        problems += [f"cut {boot} ({mode}): {p}" for p in found]
        if found and stop_at_first_loss:
            break
    return Campaign(problems, while_logging, torn_tails)


def test_power_cut_at_random_moments_loses_no_acknowledged_write(card_power: tuple[PowerSwitch, Ledger],
                                                                     tmp_path: Path) -> None:
    switch, ledger = card_power
    result = campaign(switch, ledger, tmp_path, CUTS_WHILE_LOGGING, seed=20240501, max_boots=MAX_BOOTS)
    assert not result.problems, "\n".join(result.problems[:20])
    assert result.while_logging >= CUTS_WHILE_LOGGING, "cuts hit the writer mid-boot (the rest after a clean close)"
    assert result.torn_tails > 0, "torn cuts left half lines for the reader to skip"
    assert len(ledger.files) > 100 and len(ledger.segments) > 200, "the campaign wrote clips, manifests, segments"


@pytest.mark.parametrize("kind", FSYNC_KINDS)
def test_the_campaign_fails_when_an_fsync_is_removed(card_power: tuple[PowerSwitch, Ledger], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    switch, ledger = card_power
    switch_fsync_off(kind, monkeypatch.setattr)
    problems = campaign(switch, ledger, tmp_path, 30, seed=7, stop_at_first_loss=True).problems
    assert any("acknowledged" in p or "flushed but" in p for p in problems), problems
