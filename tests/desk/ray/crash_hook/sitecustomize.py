"""Fault injection for the Ray tests: a Ray worker dies (``os._exit``) on any piece of a file whose name holds
``$BIOLINGUAL_TEST_CRASH_ON`` — an actor crash that no retry heals. Loaded by every Python process that has this
folder on PYTHONPATH; does nothing unless the variable is set and the process is a Ray worker."""

import os
import sys

MARKER = os.environ.get("BIOLINGUAL_TEST_CRASH_ON")

if MARKER and any(arg.endswith("default_worker.py") for arg in sys.argv):
    from edge.batch import piece_analysis

    analyze_piece = piece_analysis.PieceAnalyzer.__call__

    def crashing_call(self, piece):  # type: ignore[no-untyped-def]
        if MARKER in piece.path.name:
            os._exit(3)
        return analyze_piece(self, piece)

    piece_analysis.PieceAnalyzer.__call__ = crashing_call  # type: ignore[method-assign]
