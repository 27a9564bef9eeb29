"""What every offline page of the desk shares: a Content-Security-Policy that lets only its own inlined script
run and blocks every request, and data embedded so that no string in it can end its ``<script>`` element.

A page is one HTML file opened from disk (the report, the review page): nothing is fetched, no script but the
one we inlined runs (by its sha256, so an ``on…=`` attribute or a ``<script>`` smuggled in through a unit id,
label or file name is inert), and images and audio come only from ``data:`` URIs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any


def script_hash(script: str) -> str:
    """The CSP source allowing exactly this inline script text: ``'sha256-…'``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(script: str) -> str:
    """No request of any kind; the one inline ``script`` (by hash); inline styles; ``data:`` images and media."""
    return ("default-src 'none'; script-src " + script_hash(script) + "; style-src 'unsafe-inline'; "
            "img-src data:; media-src data:; base-uri 'none'; form-action 'none'")


def embedded_json(payload: Any) -> str:
    """JSON for a ``<script type="application/json">`` element: every ``<`` (and ``>``, ``&``) escaped, so
    ``</script>``, ``<!--`` or ``<script`` inside a string cannot end or reopen the element."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
