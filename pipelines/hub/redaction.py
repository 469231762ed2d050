"""Dropping credentials and query secrets from a handle before it is shown or written anywhere."""

from __future__ import annotations

import urllib.parse

# Query parameters that name a format, not a secret, and so are kept.
_KEPT_QUERY_KEYS = ("tf-hub-format",)


def redact(handle: str) -> str:
    """Returns `handle` with its credentials and secret query parameters removed.

    Local paths and `file://` URLs come back unchanged. For any other URL the
    `user:password@` part and every query parameter except `tf-hub-format`
    are dropped, as is the fragment. A URL too malformed to parse (an open
    IPv6 bracket, a bad port) keeps only its scheme and what follows the
    last `@`, without query or fragment.

    Args:
      handle: a module handle, or any URL.

    Returns:
      The handle, safe to print, log or store.
    """
    try:
        parsed = urllib.parse.urlsplit(handle)
        port = parsed.port
    except ValueError:
        return _redact_unparsable(handle)
    if not parsed.scheme or parsed.scheme == "file":
        return handle
    netloc = parsed.hostname or ""
    if ":" in netloc:  # an IPv6 address goes back in its brackets
        netloc = f"[{netloc}]"
    if port:
        netloc += f":{port}"
    query = "&".join(part for part in parsed.query.split("&") if part.split("=", 1)[0] in _KEPT_QUERY_KEYS)
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, ""))


def _redact_unparsable(handle: str) -> str:
    """Redacts a URL that `urllib.parse` refuses: its scheme, then only what follows the last `@`."""
    scheme, sep, rest = handle.partition("://")
    if not sep:
        return handle
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{rest.rpartition('@')[2]}"
