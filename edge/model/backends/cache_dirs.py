"""Where runtime caches live: never inside the bundle, which the service mounts read-only.

Under systemd the unit's ``StateDirectory=`` (``$STATE_DIRECTORY``, e.g. ``/var/lib/biolingual-edge``) is the
one writable place that survives restarts; elsewhere the user's cache folder. ``BIOLINGUAL_CACHE_DIR``
overrides both.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edge.model.bundle import Bundle

CACHE_DIR_ENV = "BIOLINGUAL_CACHE_DIR"
STATE_DIR_ENV = "STATE_DIRECTORY"
"""Set by systemd for a unit with ``StateDirectory=`` (colon-separated when it names several)."""
APP_DIR = "biolingual-edge"
TRT_EP_CACHE_DIR = "ort_trt_cache"
BUNDLE_KEY_CHARS = 12


def cache_root() -> Path:
    """``$BIOLINGUAL_CACHE_DIR``, else systemd's ``$STATE_DIRECTORY``, else ``$XDG_CACHE_HOME/biolingual-edge``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV].split(":")[0])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / APP_DIR


def bundle_key(bundle: Bundle) -> str:
    """Short digest of the bundle's file checksums: a new bundle never reuses an old bundle's engines."""
    files = json.dumps(sorted(bundle.manifest.files.items())).encode()
    return hashlib.sha256(files).hexdigest()[:BUNDLE_KEY_CHARS]


def trt_ep_cache_dir(bundle: Bundle) -> Path:
    """Engine and timing cache folder of ONNX Runtime's TensorRT provider for ``bundle`` (created)."""
    folder = cache_root() / TRT_EP_CACHE_DIR / bundle_key(bundle)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
