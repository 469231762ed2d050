"""Checking that a module handle parses, before anything uses its host or port."""

from __future__ import annotations

import urllib.parse

from pipelines.hub.errors import HandleError
from pipelines.hub.redaction import redact

# Schemes whose URLs must name a host (for gs:// and s3://, the bucket).
_NEEDS_HOST = ("http", "https", "gs", "s3")


def check_url(handle: str) -> None:
    """Raises HandleError, naming the handle (redacted) and the fault, unless `handle` parses as a URL or path.

    Catches what `urllib.parse` only reports on use: a bracketed IPv6 host
    left open, a port that is not a number from 0 to 65535, and a URL of a
    remote scheme with no host. Light to import (the job config calls it).
    """
    try:
        parts = urllib.parse.urlsplit(handle)
    except ValueError as e:  # e.g. "Invalid IPv6 URL"; urllib's message does not repeat the URL
        raise HandleError(f"Module handle {redact(handle)!r} is not a valid URL: {e}.") from None
    try:
        parts.port  # noqa: B018 (parsing the port is what raises)
    except ValueError:  # urllib's message repeats the port, which may be a misplaced password: not shown
        raise HandleError(
            f"Module handle {redact(handle)!r} is not a valid URL: its port is not a number from 0 to 65535."
        ) from None
    if parts.scheme in _NEEDS_HOST and not parts.hostname:
        raise HandleError(f"Module handle {redact(handle)!r} is not a valid URL: it names no host.")
