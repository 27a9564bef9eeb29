"""Trained linear heads stored in the bundle: one label set per head, scored on the unit with numpy alone.

A head is made at the desk (``logs train-head``) from reviewed windows: per label a logistic regression
``P(label | x) = sigmoid(w·x + b)`` on the audio embedding ``x``. It lives in the bundle as
``labels/head-<name>.npz`` (``embeddings`` = weights ``(L, D)``, ``bias`` ``(L,)``, ``names``, ``provenance``
JSON), listed in the manifest as a label set with ``source="head"`` and checksummed like every file.
"""

from __future__ import annotations

import json

import numpy as np

from edge.errors import LabelError
from edge.model.bundle import Bundle
from edge.model.space import check_space
from edge.scoring.scorer import HEAD_SOURCE, LabelSet

HEAD_KEY_PREFIX = "head-"
HEAD_THRESHOLD = 0.0
"""Default score threshold of a head label: logit 0, i.e. P = 0.5."""


def head_key(name: str) -> str:
    """Manifest key (and file stem) of the head called ``name``."""
    return HEAD_KEY_PREFIX + name


def head_names(bundle: Bundle) -> list[str]:
    """Names of the heads stored in the bundle."""
    return sorted(key[len(HEAD_KEY_PREFIX):] for key, entry in bundle.manifest.label_sets.items()
                  if entry.source == HEAD_SOURCE)


def load_head(bundle: Bundle, name: str) -> LabelSet:
    """The head ``name`` as a label set whose scores are the head's logits."""
    entry = bundle.manifest.label_sets.get(head_key(name))
    if entry is None or entry.source != HEAD_SOURCE:
        have = ", ".join(head_names(bundle)) or "none"
        raise LabelError(f"bundle {bundle.root} has no head '{name}' (it has: {have})",
                         f"train one with `biolingual-edge logs train-head --bundle {bundle.root} --name {name} ...`")
    data = np.load(bundle.path(entry.path))
    try:
        trained_in = str(json.loads(str(data["provenance"]))["model_sha256"])
    except (KeyError, ValueError, TypeError):  # no provenance at all: nothing says which space it was trained in
        trained_in = ""
    check_space(f"head '{name}' ({entry.path})", entry.embedding_space or trained_in, bundle,
                f"train it again into this bundle: `biolingual-edge logs train-head --bundle {bundle.root} "
                f"--name {name} ...`")
    return LabelSet(entry.names, data["embeddings"].astype(np.float32), data["bias"].astype(np.float32))
