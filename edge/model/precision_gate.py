"""Refuse a model whose parity report (``parity.json``, written by ``biolingual-export verify``) is missing,
stale or failed, unless the user forces it: a reduced precision must prove it agrees with fp32 first."""

from __future__ import annotations

import json
import logging

from edge.errors import BundleError
from edge.model.bundle import PARITY_FILE, TRT_PREFIX, Bundle

log = logging.getLogger(__name__)

TRT_KEY_PREFIX = TRT_PREFIX
"""Manifest keys of TensorRT engines: ``trt-fp16``, ``trt-int8``, ``trt-fp32``."""


def model_key(backend: str, precision: str) -> str:
    """Manifest key of the model a backend runs at a precision (``int8-trt`` stays as given for ORT)."""
    return f"{TRT_KEY_PREFIX}{precision}" if backend == "trt" else precision


def check_precision(bundle: Bundle, key: str, force: bool = False) -> None:
    """Raise :class:`BundleError` unless the parity report says model ``key`` passed its gates."""
    entry = bundle.model(key)
    verify_hint = f"run `biolingual-export verify --bundle {bundle.root} --audio DIR`, or pass --force-precision"
    path = bundle.path(PARITY_FILE)
    verdict = None
    if path.is_file():
        try:
            verdict = json.loads(path.read_text(encoding="utf-8")).get("models", {}).get(key)
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise BundleError(f"{path} is unreadable ({e})", verify_hint) from e
    problem = None
    if not isinstance(verdict, dict):
        problem = f"the {key} model of {bundle.root} has no parity report"
    elif verdict.get("sha256") != bundle.manifest.files.get(entry.path):
        problem = f"the parity report of the {key} model is for another version of {entry.path}"
    elif not verdict.get("passed"):
        problem = f"the {key} model failed its parity gates (stage {verdict.get('stage')} in {PARITY_FILE})"
    if problem is None:
        return
    if isinstance(verdict, dict) and verdict.get("sha256") == bundle.manifest.files.get(entry.path):
        # measured and failed: verifying again gives the same numbers
        verify_hint = (f"use a precision that passed (see {path}), or re-quantize with more calibration windows "
                       "or more --keep-fp32 groups; --force-precision runs it anyway")
    if force:
        log.warning("%s; using it anyway (--force-precision)", problem)
        return
    raise BundleError(problem, verify_hint)
