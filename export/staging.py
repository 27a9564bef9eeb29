"""Bundles appear whole or not at all: built in a hidden sibling folder, renamed into place when complete."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import soundfile as sf

from edge.audio.files import find_audio_files
from export.errors import ExportError

STAGING_PREFIX = ".partial-"


def check_new_folder(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty ``out`` (it may hold label sets and precision variants) unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file", "pass a folder path for the new bundle")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {out} already exists and is not empty",
                          "choose a new --out, or pass --overwrite to replace that bundle")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty sibling folder of ``out``; on success it replaces ``out``, on any error it is removed."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{STAGING_PREFIX}{out.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = out.parent / f"{STAGING_PREFIX}{out.name}-{os.getpid()}.old"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def window_count(paths: list[Path], window_s: float) -> int:
    """Windows of ``window_s`` (tail included, as ``clip_windows`` cuts them) in the readable recordings under
    ``paths``, from their headers: nothing is decoded."""
    count = 0
    for path in find_audio_files(paths):
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError):
            continue
        if info.frames > 0 and info.samplerate > 0:
            count += math.ceil(info.frames / info.samplerate / window_s)
    return count
