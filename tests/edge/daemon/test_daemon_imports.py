"""`biolingual-edge run` builds the whole unit CLI; analyze's machinery is loaded only when `analyze` runs, so a
unit daemon does not carry it (≈ 2 MB of its peak RSS: the pool, the writer, the table formatters, rich.progress)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

NOT_IN_THE_DAEMON = ("edge.batch.analyze", "edge.batch.pool", "edge.batch.writer", "edge.batch.tables",
                     "edge.batch.table_text", "edge.batch.piece_analysis", "rich.progress", "concurrent.futures")


def test_the_unit_cli_loads_no_analyze_machinery_until_analyze_runs() -> None:
    script = ("import json, sys\nimport edge.cli\n"
              f"print(json.dumps([m for m in {list(NOT_IN_THE_DAEMON)!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []
    helped = subprocess.run([sys.executable, "-m", "edge", "analyze", "--help"], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, timeout=120,
                            check=True)
    assert "csv, raven, audacity, birdnet, occupancy" in helped.stdout  # the choices still shown
