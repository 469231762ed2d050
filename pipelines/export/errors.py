"""The export tool's errors."""

from __future__ import annotations


class ExportError(ValueError):
    """An export that cannot be done: bad source, signature, name or version."""


class ExportVerificationError(ExportError):
    """The written module does not reproduce the in-memory model; nothing was published."""
