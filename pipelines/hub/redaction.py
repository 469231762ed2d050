"""Dropping credentials and query secrets from a handle before it is shown or written anywhere."""

from __future__ import annotations

import urllib.parse

# Query parameters that name a format, not a secret, and so are kept.
_KEPT_QUERY_KEYS = ("tf-hub-format",)


def redact(handle: str) -> str:
    """Returns `handle` with its credentials and secret query parameters removed.

    Local paths and `file://` URLs come back unchanged. For any other URL the
    `user:password@` part and every query parameter except `tf-hub-format`
    are dropped, as is the fragment.

    Args:
      handle: a module handle, or any URL.

    Returns:
      The handle, safe to print, log or store.
    """
    parsed = urllib.parse.urlsplit(handle)
    if not parsed.scheme or parsed.scheme == "file":
        return handle
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    query = "&".join(part for part in parsed.query.split("&") if part.split("=", 1)[0] in _KEPT_QUERY_KEYS)
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, ""))
