"""Fault injection for the Ray tests, loaded by every Python process that has this folder on PYTHONPATH; it acts
only in Ray workers, and only when one of its variables is set:

- ``BIOLINGUAL_TEST_CRASH_ON``: the worker dies (``os._exit``) on any piece of a recording, or any archive file,
  whose name holds it — a crash that no retry heals.
- ``BIOLINGUAL_TEST_HOLD_DIR``: before reading an archive file, or analysing a piece, the worker writes
  ``started.<pid>.<n>`` there and waits while ``hold`` exists there — so a test can kill or freeze a node while it
  is known to be working on the job."""

import itertools
import os
import sys
import time

MARKER = os.environ.get("BIOLINGUAL_TEST_CRASH_ON")
HOLD_DIR = os.environ.get("BIOLINGUAL_TEST_HOLD_DIR")
IN_RAY_WORKER = any(arg.endswith("default_worker.py") for arg in sys.argv)

if MARKER and IN_RAY_WORKER:
    from edge.batch import piece_analysis

    analyze_piece = piece_analysis.PieceAnalyzer.__call__

    def crashing_call(self, piece):  # type: ignore[no-untyped-def]
        if MARKER in piece.path.name:
            os._exit(3)
        return analyze_piece(self, piece)

    piece_analysis.PieceAnalyzer.__call__ = crashing_call  # type: ignore[method-assign]

    from desk.archive import store

    read_file = store.score_file

    def crashing_read(stored, queries):  # type: ignore[no-untyped-def]
        if MARKER in os.path.basename(stored.path):
            os._exit(3)
        return read_file(stored, queries)

    store.score_file = crashing_read

if HOLD_DIR and IN_RAY_WORKER:
    from desk.archive import store
    from edge.batch import piece_analysis

    calls = itertools.count()

    def started(what):  # type: ignore[no-untyped-def]
        with open(os.path.join(HOLD_DIR, f"started.{os.getpid()}.{next(calls)}"), "w") as marker:
            marker.write(what)
        while os.path.exists(os.path.join(HOLD_DIR, "hold")):
            time.sleep(0.05)

    score_file = store.score_file

    def held_score_file(stored, queries):  # type: ignore[no-untyped-def]
        started(stored.path)
        return score_file(stored, queries)

    store.score_file = held_score_file
    held_piece = piece_analysis.PieceAnalyzer.__call__

    def held_call(self, piece):  # type: ignore[no-untyped-def]
        started(str(piece.path))
        return held_piece(self, piece)

    piece_analysis.PieceAnalyzer.__call__ = held_call  # type: ignore[method-assign]
