"""Calibration-side typed errors (same one-line + hint contract as the edge runtime)."""

from __future__ import annotations

from edge.errors import EdgeError


class CalibrationError(EdgeError):
    """Calibration audio or data is missing, unreadable, or too small for the requested batch."""
