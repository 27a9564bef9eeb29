"""Power cuts under the real daemon: ``biolingual-edge run --input … --fast`` on the forgetful FUSE card.

Each run is a real process (``tests.powercut.acked_run`` journals what its card writer acknowledged); the power
is cut at a random change to the card and the process ``kill -9``'d with it, as a pulled battery would. After
every cut the card parses, holds every acknowledged byte and file (clips included), nothing twice, and
``logs collect`` ingests every row. The many-cut campaign on the writer alone is in ``test_powercut.py``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from desk.collect.database import connect
from desk.collect.ingest import collect
from tests.powercut.harness import (
    FSYNC_KINDS,
    FSYNC_OFF_VARIABLE,
    REPO,
    Ledger,
    PowerSwitch,
    check_card,
    power_switch,
    table_sizes,
)

DAEMON_CUTS = 6
RUN_TIMEOUT_S = 180.0
POLL_S = 0.01
if not os.path.exists("/dev/fuse"):
    pytest.skip("no /dev/fuse on this machine", allow_module_level=True)


def start_run(journal: Path, card: Path, bundle: Path, labels: Path, recording: Path,
              fsync_off: str = "") -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.powercut.acked_run", str(journal), "run", "--labels", str(labels),
               "--bundle", str(bundle), "--log-dir", str(card), "--input", str(recording), "--fast",
               "--threshold", "0.5", "--score-mode", "softmax", "--heartbeat", "0.2",
               "--set", "unit.unit_id=cut-unit", "--set", "storage.clips.mode=detections",
               "--set", "storage.clips.format=wav"]
    env = {**os.environ, "PYTHONPATH": str(REPO), FSYNC_OFF_VARIABLE: fsync_off}
    return subprocess.Popen(command, cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_until_cut(process: subprocess.Popen[str], switch: PowerSwitch) -> bool:
    """Wait for the power to go (then kill the process with it: True) or for the run to end (False)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while process.poll() is None:
        if switch.is_off():
            process.kill()
            process.wait()
            return True
        assert time.monotonic() < deadline, "the daemon neither finished nor lost power"
        time.sleep(POLL_S)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    return False


def card_problems(card: Path, ledger: Ledger, db: Path) -> list[str]:
    problems = ledger.losses(card)
    if not card.exists():
        return problems
    checked = check_card(card)
    problems += checked.problems
    result = collect([card], db, now=datetime.now(timezone.utc))
    problems += [f"collect: {f.message}" for f in result.findings if f.check == "rows"]
    on_card = table_sizes(checked.contents)
    con = connect(db, read_only=True)
    try:
        stored = {table: int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]) for table in on_card}
    finally:
        con.close()
    if stored != on_card:
        problems.append(f"collect stored {stored}, the card holds {on_card}")
    return problems


def daemon_campaign(bundle: Path, labels: Path, recording: Path, tmp_path: Path, cuts: int,
                    fsync_off: str = "") -> tuple[list[str], int]:
    """Problems found after each of ``cuts`` power cuts, and how many cuts hit the daemon while it ran."""
    rng = random.Random(20241202)
    with power_switch(tmp_path / "mnt") as switch:
        card = switch.mountpoint / "card"
        journals = [tmp_path / "journal-0.jsonl"]
        calibration = start_run(journals[0], card, bundle, labels, recording)
        assert not run_until_cut(calibration, switch)
        operations = switch.operations()
        full = Ledger.replay(journals)
        assert any(name.endswith(".wav") for name in full.files), "the run saved clips"
        problems = card_problems(card, full, tmp_path / "db.duckdb")
        cuts_while_running = 0
        for cut in range(1, cuts + 1):
            journals.append(tmp_path / f"journal-{cut}.jsonl")
            mode = rng.choice(("lazy", "torn"))
            switch.arm(rng.randint(1, operations), mode, rng.randrange(1 << 30))
            process = start_run(journals[-1], card, bundle, labels, recording, fsync_off)
            if run_until_cut(process, switch):
                cuts_while_running += 1
            else:
                switch.cut(mode, rng.randrange(1 << 30))
            switch.revive()
            problems += [f"cut {cut} ({mode}): {p}"
                         for p in card_problems(card, Ledger.replay(journals), tmp_path / "db.duckdb")]
    return problems, cuts_while_running


def test_power_cuts_under_the_real_daemon_lose_no_acknowledged_write(example_bundle: Path,
                                                                    example_labels: tuple[Path, Path],
                                                                    toad_in_night: Path, tmp_path: Path) -> None:
    problems, cuts_while_running = daemon_campaign(example_bundle, example_labels[0], toad_in_night, tmp_path,
                                                   DAEMON_CUTS)
    assert not problems, "\n".join(problems[:20])
    assert cuts_while_running >= DAEMON_CUTS // 2, "most cuts hit the daemon while it logged"


@pytest.mark.parametrize("kind", FSYNC_KINDS)
def test_the_daemon_campaign_fails_when_an_fsync_is_removed(example_bundle: Path, example_labels: tuple[Path, Path],
                                                            toad_in_night: Path, tmp_path: Path, kind: str) -> None:
    problems, _ = daemon_campaign(example_bundle, example_labels[0], toad_in_night, tmp_path, DAEMON_CUTS, kind)
    assert any("acknowledged" in p for p in problems), problems
