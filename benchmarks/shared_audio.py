"""Where the benchmarks find the field recordings when ``--audio`` is not given: as the tests do."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIABLE = "BIOLINGUAL_SHARED_AUDIO"
AUDIO_HELP = f"folder of real recordings (default: ${VARIABLE}, else shared/audio beside the repository)"


def shared_audio() -> Path:
    """``$BIOLINGUAL_SHARED_AUDIO``, else ``shared/audio`` beside the repository; ``SystemExit`` with a one-line
    error and a hint where that is not a folder (a git worktree has no ``shared/`` beside it)."""
    given = os.environ.get(VARIABLE)
    folder = Path(given) if given else REPO.parent / "shared" / "audio"
    if not folder.is_dir():
        where = f"{VARIABLE}={given}" if given else str(folder)
        raise SystemExit(f"error: no folder of field recordings at {where}\n"
                         f"hint: pass --audio DIR, or set {VARIABLE} to the recordings' folder")
    return folder
