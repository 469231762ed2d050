"""The resolvers in use, and `resolve(handle)`: the first resolver that supports a handle resolves it."""

from __future__ import annotations

import urllib.parse

from pipelines.hub import resolver
from pipelines.hub.errors import HandleError
from pipelines.hub.http_resolver import HttpArchiveResolver
from pipelines.hub.local_resolver import LocalResolver
from pipelines.hub.object_store_resolver import ObjectStoreResolver
from pipelines.hub.redaction import redact
from pipelines.hub.urls import check_url

SUPPORTED_FORMS = "a local directory or .tar.gz, file://, http://, https://, gs://, s3://"

RESOLVERS: list[resolver.Resolver] = [LocalResolver(), HttpArchiveResolver(), ObjectStoreResolver()]


def resolve(
    handle: str, timeout_s: float | None = None, options: resolver.ResolveOptions | None = None
) -> resolver.ResolvedModule:
    """Resolves a handle to a local module directory with its fingerprint.

    Args:
      handle: a local directory or `.tar.gz` (plain path or `file://` URL), an
        `http(s)://` URL to a `.tar.gz` (or to a model that TF Hub's
        `?tf-hub-format=compressed` convention serves as one), or a `gs://` or
        `s3://` path to a module directory or `.tar.gz`.
      timeout_s: network timeout for remote handles (default
        `resolver.DEFAULT_TIMEOUT_S`, 60 s): for connecting, and for each read.
      options: the limits on fetching and unpacking, whether credentials may
        go over plain http, and whether cached modules are re-hashed (default
        `resolver.DEFAULT_OPTIONS`).

    Returns:
      The resolved module.

    Raises:
      HandleError: malformed URL, unsupported scheme, missing module, download
        failure or timeout, corrupt or unsafe archive, a limit exceeded, or a
        directory that is not a module.
    """
    if not isinstance(handle, str) or not handle.strip():
        raise HandleError(f"Module handle must be a non-empty string, got {handle!r}.")
    check_url(handle)
    timeout = resolver.DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    for candidate in RESOLVERS:
        if candidate.is_supported(handle):
            return candidate(handle, timeout, options or resolver.DEFAULT_OPTIONS)
    scheme = urllib.parse.urlsplit(handle).scheme
    raise HandleError(f"Unsupported handle scheme {scheme!r} in {redact(handle)!r}; supported: {SUPPORTED_FORMS}.")
