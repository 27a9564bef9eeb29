"""Typed errors for the edge runtime: each carries a one-line message and a hint naming the fix."""

from __future__ import annotations


class EdgeError(Exception):
    """A user-facing error. The CLI prints ``message`` and ``hint`` on one line each, never a traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self) -> tuple[type[EdgeError], tuple[str, str]]:
        # keeps the hint when a worker process sends the error back to the parent
        return type(self), (self.message, self.hint)

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class BundleError(EdgeError):
    """The model bundle is missing, incomplete, corrupted or from an incompatible schema/engine."""


class AudioError(EdgeError):
    """An audio file or stream cannot be read or has an unusable format."""


class LabelError(EdgeError):
    """The label list is empty, malformed, or names labels the bundle has no embeddings for."""


class BackendError(EdgeError):
    """An inference backend cannot be created or failed while running."""


class ConfigError(EdgeError):
    """A configuration value is invalid."""


class OutputError(EdgeError):
    """A result could not be written (full disk, read-only or vanished folder); what was written is kept."""

    exit_code = 1
