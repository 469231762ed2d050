"""A search refused before it ran: a bad query, table, collection or module (exit 2)."""

from __future__ import annotations


class SearchError(ValueError):
    """Bad input: the message says which and why."""
