"""The two ways a publish ends badly: refused before any write (exit 2), or failed while it ran (exit 1)."""

from __future__ import annotations


class PublishError(ValueError):
    """Bad input refused before anything was written: the table, the database, the collection or the options."""


class PublishFailed(RuntimeError):
    """The publish started and did not complete; the collection is as it was, and running it again completes it."""
