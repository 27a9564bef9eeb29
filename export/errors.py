"""Export-side typed errors (same one-line + hint contract as the edge runtime)."""

from __future__ import annotations

from edge.errors import EdgeError


class ExportError(EdgeError):
    """A checkpoint cannot be loaded or exported, or the export failed its parity gate."""
