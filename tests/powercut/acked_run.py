"""``python -m tests.powercut.acked_run JOURNAL ARGS...``: the real ``biolingual-edge ARGS...`` with a ledger.

Every write the card writer acknowledges is journaled to JOURNAL (outside the card) as it happens, so the test
can cut the power, ``kill -9`` this process, and still know what was promised durable. With
``POWERCUT_FSYNC_OFF=file`` (or ``directory``) in the environment the run's writer loses that fsync.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.powercut.harness import FSYNC_OFF_VARIABLE, Ledger, switch_fsync_off


def main() -> None:
    Ledger(Path(sys.argv[1])).install(setattr)
    if os.environ.get(FSYNC_OFF_VARIABLE):
        switch_fsync_off(os.environ[FSYNC_OFF_VARIABLE], setattr)
    from edge.cli import app

    app(sys.argv[2:], prog_name="biolingual-edge")


if __name__ == "__main__":
    main()
