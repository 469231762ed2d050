"""A report refused before anything was written: a bad table, comparison or projector request (exit 2)."""

from __future__ import annotations


class ReportError(ValueError):
    """A report that cannot be made from its input (exit 2)."""
