"""Resolver for `http(s)://` handles: a module `.tar.gz`, TF Hub's compressed format included."""

from __future__ import annotations

import base64
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPMessage
from typing import IO

from pipelines.hub import archives
from pipelines.hub.cache_files import CHUNK_BYTES
from pipelines.hub.errors import HandleError
from pipelines.hub.limits import Limits
from pipelines.hub.module_cache import resolve_into_cache, unpack_into_staging
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import DEFAULT_OPTIONS, DEFAULT_TIMEOUT_S, ResolvedModule, ResolveOptions, Resolver

_USER_AGENT = "hub-embed"


def compressed_url(url: str) -> str:
    """Applies TF Hub's convention: a model URL that is not an archive gets `?tf-hub-format=compressed`."""
    parts = urllib.parse.urlsplit(url)
    if archives.is_archive_name(parts.path) or "tf-hub-format=" in parts.query:
        return url
    query = f"{parts.query}&tf-hub-format=compressed" if parts.query else "tf-hub-format=compressed"
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _request(url: str, allow_insecure_http: bool = False) -> urllib.request.Request:
    """A GET request for `url`; `user:password@` in it becomes HTTP Basic authorization.

    urllib cannot connect to a URL with user info in it, so it is moved into
    an `Authorization` header, which is not sent on to a redirect's target.

    Raises:
      HandleError: the URL carries credentials over plain `http://` and
        `allow_insecure_http` is not set.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if parts.scheme == "http" and not allow_insecure_http:
        raise HandleError(
            f"Module handle {redact(url)!r} carries a user name and password over plain http://, which would send "
            "them unencrypted; use https://, or pass --allow-insecure-http to send them anyway."
        )
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(bare, headers={"User-Agent": _USER_AGENT})
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only (urllib also follows them to ftp://)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        """The request for the redirect's target; HandleError for a target that is not http(s)."""
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            fp.close()
            raise HandleError(
                f"Module handle {redact(req.full_url)!r} redirected to an unsupported scheme {scheme!r} "
                f"({redact(newurl)}); modules are downloaded over http and https only."
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


class HttpArchiveResolver(Resolver):
    """`http(s)://` URL to a module `.tar.gz`, downloaded once into the cache."""

    def is_supported(self, handle: str) -> bool:
        """`http://` and `https://` URLs."""
        return urllib.parse.urlsplit(handle).scheme in ("http", "https")

    def __call__(
        self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S, options: ResolveOptions = DEFAULT_OPTIONS
    ) -> ResolvedModule:
        """Resolves a URL through the cache (see `Resolver`)."""
        request = _request(compressed_url(handle), options.allow_insecure_http)  # refuses before touching the cache
        return resolve_into_cache(
            handle, lambda h, staging: self._fetch(h, request, staging, timeout_s, options.limits), timeout_s, options
        )

    def _fetch(
        self, handle: str, request: urllib.request.Request, staging: str, timeout_s: float, limits: Limits
    ) -> None:
        download = os.path.join(staging, "download.tar.gz")
        shown = redact(handle)
        cap = limits.max_download_bytes
        subject = f"Module handle {shown!r}"
        try:
            with _OPENER.open(request, timeout=timeout_s) as response, open(download, "wb") as out:
                length = (response.headers.get("Content-Length") or "").strip()
                expected = int(length) if length.isdigit() else None
                if expected is not None and expected > cap:
                    raise HandleError(limits.exceeded("max_download_bytes", subject, f"it is {expected:,} bytes"))
                received = 0
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    received += len(chunk)
                    if received > cap:
                        raise HandleError(limits.exceeded("max_download_bytes", subject, f"more than {cap:,} bytes"))
                    out.write(chunk)
        except HandleError:
            raise
        except urllib.error.HTTPError as e:
            raise HandleError(f"Module handle {shown!r} could not be downloaded: HTTP {e.code} {e.reason}.") from e
        except TimeoutError as e:
            raise HandleError(f"Module handle {shown!r} timed out after {timeout_s:.0f}s while downloading.") from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise HandleError(f"Module handle {shown!r} timed out after {timeout_s:.0f}s while connecting.") from e
            raise HandleError(f"Module handle {shown!r} could not be downloaded: {e.reason}.") from e
        except (ConnectionError, OSError) as e:
            raise HandleError(f"Module handle {shown!r} could not be downloaded: {e}.") from e
        if expected is not None and received != expected:
            raise HandleError(f"Module archive {shown} is truncated: received {received} of {expected} bytes.")
        unpack_into_staging(download, staging, handle, limits)
        os.remove(download)
