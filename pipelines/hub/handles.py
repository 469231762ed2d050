"""Module handles: turn any handle into a local module directory with a fingerprint.

A *handle* names a TF Hub module. Supported forms:

* a local directory, or `file:///abs/dir`;
* a local `.tar.gz` (or `file://` URL to one);
* `http://` / `https://` URL to a `.tar.gz`, including TF Hub's
  `?tf-hub-format=compressed` convention; `user:password@` in the URL is sent
  as HTTP Basic authorization, and redirects are followed to http(s) only;
* `gs://` and `s3://` paths to a module directory or a `.tar.gz`.

`gs://` and `s3://` are read through Apache Beam's filesystems rather than
`tf.io.gfile`: TensorFlow dropped its built-in S3 filesystem (it lives in
tensorflow-io now), while Beam's filesystems are what the pipeline already uses
for inputs and outputs, so credentials, endpoints (`--s3_endpoint_url`,
`STORAGE_EMULATOR_HOST`, `AWS_ENDPOINT_URL`) and retries are configured once.

Remote modules are unpacked into a cache (`$HUB_EMBED_CACHE_DIR`, else
`$TFHUB_CACHE_DIR`, else `~/.cache/hub-embed/modules`). Each cache entry is
guarded by an `fcntl` lock file: the kernel drops the lock when its holder
dies, so a crashed download never deadlocks the next one. Modules are built in
a private staging directory and renamed into place, so no partial module is
ever visible. An entry is complete only once its `<key>.fingerprint` file
exists beside it.

The resolvers here are also registered with `tensorflow_hub`'s resolver
registry (`register_with_tfhub`), so `hub.load(handle)` and
`hub.KerasLayer(handle)` use the same cache.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

from pipelines.hub import archives, locks

SCHEMES = ("file", "http", "https", "gs", "s3")
SUPPORTED_FORMS = "a local directory or .tar.gz, file://, http://, https://, gs://, s3://"
MANIFEST_NAME = "module.json"
DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class HandleError(ValueError):
    """A handle that cannot be resolved; the message says why."""


@dataclasses.dataclass(frozen=True)
class ResolvedModule:
    """A module available on local disk.

    Attributes:
      handle: the handle as given.
      path: local directory holding the module.
      fingerprint: `sha256:<hex>` content hash of the module's files.
    """

    handle: str
    path: str
    fingerprint: str


def cache_dir() -> str:
    """Returns the module cache directory (created on demand)."""
    path = (
        os.environ.get("HUB_EMBED_CACHE_DIR")
        or os.environ.get("TFHUB_CACHE_DIR")
        or os.path.join(os.path.expanduser("~"), ".cache", "hub-embed", "modules")
    )
    os.makedirs(path, exist_ok=True)
    return path


def is_module_dir(path: str) -> bool:
    """Returns True if `path` holds a TF2 SavedModel or a TF1 Hub-format module."""
    return os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(os.path.join(path, "tfhub_module.pb"))


def _iter_module_files(path: str) -> Iterator[str]:
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), path)
            if rel != MANIFEST_NAME:
                yield rel


def fingerprint_dir(path: str) -> str:
    """Computes the content fingerprint of a module directory.

    The hash covers every file's relative path and bytes, except the
    `module.json` manifest (which records the fingerprint itself).

    Args:
      path: module directory.

    Returns:
      `"sha256:<hex>"`.
    """
    digest = hashlib.sha256()
    for rel in _iter_module_files(path):
        file_hash = hashlib.sha256()
        with open(os.path.join(path, rel), "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                file_hash.update(chunk)
        digest.update(rel.replace(os.sep, "/").encode() + b"\0" + file_hash.digest())
    return "sha256:" + digest.hexdigest()


def _stat_signature(path: str) -> str:
    parts = []
    for rel in _iter_module_files(path):
        st = os.stat(os.path.join(path, rel))
        parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def local_fingerprint(path: str) -> str:
    """Returns the fingerprint of a local module directory, computed once.

    The result is stored in the cache, keyed by the directory's absolute path and
    a signature of its files' sizes and modification times, so an unchanged
    directory is hashed only once and a changed one is hashed again.
    """
    path = os.path.abspath(path)
    store = os.path.join(cache_dir(), "local-fingerprints")
    os.makedirs(store, exist_ok=True)
    record_path = os.path.join(store, hashlib.sha1(path.encode()).hexdigest() + ".json")
    signature = _stat_signature(path)
    with contextlib.suppress(OSError, ValueError):
        with open(record_path) as f:
            record = json.load(f)
        if record.get("signature") == signature:
            return record["fingerprint"]
    fingerprint = fingerprint_dir(path)
    _atomic_write_text(record_path, json.dumps({"path": path, "signature": signature, "fingerprint": fingerprint}))
    return fingerprint


_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def _record_path(fingerprint: str, kind: str) -> str | None:
    if not _FINGERPRINT.fullmatch(fingerprint or "") or not kind.isidentifier():
        return None
    return os.path.join(cache_dir(), "by-fingerprint", f"{fingerprint.replace(':', '-')}.{kind}.json")


def read_record(fingerprint: str, kind: str) -> dict | None:
    """Returns what `write_record` stored for a module fingerprint, or None.

    Args:
      fingerprint: the module's content fingerprint (`sha256:<hex>`).
      kind: what the record holds (e.g. "description"), an identifier.

    Returns:
      The stored JSON object; None when there is none, or when it is unreadable
      or was not written for this fingerprint (the caller recomputes it and
      writes it again).
    """
    path = _record_path(fingerprint, kind)
    if path is None:
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return None
    return record


def write_record(fingerprint: str, kind: str, record: dict) -> bool:
    """Stores a JSON object about a module, keyed by its fingerprint, atomically.

    A record is derived from the module's files only, so the fingerprint
    (their content hash) is its whole key. The cache is an optimization: a
    write that fails (read-only or full disk) is skipped.

    Returns:
      True when the record was written.
    """
    path = _record_path(fingerprint, kind)
    if path is None:
        return False
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _atomic_write_text(path, json.dumps({**record, "fingerprint": fingerprint}, sort_keys=True))
    except OSError:
        return False
    return True


def _require_module_dir(path: str, handle: str) -> None:
    if not is_module_dir(path):
        try:
            listing = sorted(os.listdir(path))[:20]
        except OSError:
            listing = []
        raise HandleError(
            f"{handle!r} is not a TF Hub module: it has neither saved_model.pb (TF2 SavedModel) "
            f"nor tfhub_module.pb (TF1 Hub format). Found: {listing or 'nothing'}."
        )


# --------------------------------------------------------------------------- cache


def _cached_resolve(handle: str, fetch, timeout_s: float) -> ResolvedModule:
    """Resolves `handle` into the cache, building the entry with `fetch(handle, staging_dir)`."""
    root = cache_dir()
    key = hashlib.sha1(handle.encode()).hexdigest()
    module_dir = os.path.join(root, key)

    def completed() -> ResolvedModule | None:
        try:
            with open(module_dir + ".fingerprint") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        if os.path.isdir(module_dir):
            return ResolvedModule(handle, module_dir, record["fingerprint"])
        return None

    done = completed()
    if done:
        return done
    lock_wait_s = timeout_s + 300  # room for another process's whole download
    try:
        with locks.file_lock(module_dir + ".lock", lock_wait_s):
            return completed() or _build_entry(handle, fetch, root, key)
    except locks.LockTimeout:
        raise HandleError(
            f"Timed out after {lock_wait_s:.0f}s waiting for another process to finish resolving {redact(handle)!r}."
        ) from None


def _build_entry(handle: str, fetch, root: str, key: str) -> ResolvedModule:
    """Builds cache entry `key` in a private staging dir and renames it into place (caller holds its lock)."""
    module_dir = os.path.join(root, key)
    # We hold the lock: anything left for this key is debris of a crashed run.
    staging_root = os.path.join(root, ".staging")
    os.makedirs(staging_root, exist_ok=True)
    for name in os.listdir(staging_root):
        if name.startswith(key + "."):
            shutil.rmtree(os.path.join(staging_root, name), ignore_errors=True)
    if os.path.exists(module_dir):
        shutil.rmtree(module_dir)
    staging = os.path.join(staging_root, f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        fetch(handle, staging)
        module_root = _single_root(staging)
        _require_module_dir(module_root, redact(handle))
        fingerprint = fingerprint_dir(module_root)
        os.rename(module_root, module_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The fingerprint file marks the entry complete: written last, atomically.
    _atomic_write_text(
        module_dir + ".fingerprint",
        json.dumps({"handle": redact(handle), "fingerprint": fingerprint, "resolved_at": time.time()}),
    )
    return ResolvedModule(handle, module_dir, fingerprint)


def _single_root(staging: str) -> str:
    """The module root inside the staging dir: the module itself is unpacked into `staging/module`."""
    return os.path.join(staging, "module")


def redact(handle: str) -> str:
    """Drops credentials and query secrets from a URL before it is written anywhere."""
    parsed = urllib.parse.urlsplit(handle)
    if not parsed.scheme or parsed.scheme == "file":
        return handle
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    query = "&".join(part for part in parsed.query.split("&") if part.split("=", 1)[0] in ("tf-hub-format",))
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, ""))


# --------------------------------------------------------------------------- resolvers


class Resolver:
    """A resolver answers `is_supported(handle)` and `__call__(handle) -> ResolvedModule`.

    Same protocol as `tensorflow_hub.resolver.Resolver`, except that it returns a
    `ResolvedModule` (path + fingerprint); `register_with_tfhub` adapts it.
    """

    def is_supported(self, handle: str) -> bool:
        raise NotImplementedError

    def __call__(self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResolvedModule:
        raise NotImplementedError


class LocalResolver(Resolver):
    """A local directory or `.tar.gz`, as a plain path or a `file://` URL."""

    def is_supported(self, handle: str) -> bool:
        scheme = urllib.parse.urlsplit(handle).scheme
        return scheme in ("", "file") or (len(scheme) == 1 and handle[1:3] in (":\\", ":/"))

    def __call__(self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResolvedModule:
        path = _file_url_path(handle)
        if not os.path.exists(path):
            raise HandleError(f"Module handle {handle!r} does not exist (no such file or directory: {path}).")
        if os.path.isdir(path):
            _require_module_dir(path, handle)
            return ResolvedModule(handle, os.path.abspath(path), local_fingerprint(path))
        if archives.is_archive_name(path):
            abspath = os.path.abspath(path)
            st = os.stat(abspath)
            # Key on path + size + mtime: a rewritten archive is a new entry.
            versioned = f"{abspath}#{st.st_size}-{st.st_mtime_ns}"

            def fetch(_handle: str, staging: str) -> None:
                _extract_into(abspath, staging, handle)

            resolved = _cached_resolve(versioned, fetch, timeout_s)
            return dataclasses.replace(resolved, handle=handle)
        raise HandleError(
            f"Module handle {handle!r} is a file but not a module archive (expected a directory or "
            f"one of {', '.join(archives.ARCHIVE_SUFFIXES)})."
        )


def _file_url_path(handle: str) -> str:
    if handle.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(handle).path)
    return os.path.expanduser(handle)


def _extract_into(tar_path: str, staging: str, handle: str) -> None:
    target = _single_root(staging)
    os.makedirs(target)
    try:
        archives.safe_extract(tar_path, target, source=redact(handle))
    except archives.ArchiveError as e:
        raise HandleError(str(e)) from e


def compressed_url(url: str) -> str:
    """Applies TF Hub's convention: a model URL that is not an archive gets `?tf-hub-format=compressed`."""
    parts = urllib.parse.urlsplit(url)
    if archives.is_archive_name(parts.path) or "tf-hub-format=" in parts.query:
        return url
    query = f"{parts.query}&tf-hub-format=compressed" if parts.query else "tf-hub-format=compressed"
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _request(url: str) -> urllib.request.Request:
    """A GET request for `url`; `user:password@` in it becomes HTTP Basic authorization.

    urllib cannot connect to a URL with user info in it, so it is moved into
    an `Authorization` header, which is not sent on to a redirect's target.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url, headers={"User-Agent": "hub-embed"})
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(bare, headers={"User-Agent": "hub-embed"})
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only (urllib also follows them to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib API)
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
    """`http(s)://` URL to a module `.tar.gz` (TF Hub's compressed format)."""

    def is_supported(self, handle: str) -> bool:
        return urllib.parse.urlsplit(handle).scheme in ("http", "https")

    def __call__(self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResolvedModule:
        return _cached_resolve(handle, lambda h, staging: self._fetch(h, staging, timeout_s), timeout_s)

    def _fetch(self, handle: str, staging: str, timeout_s: float) -> None:
        download = os.path.join(staging, "download.tar.gz")
        shown = redact(handle)
        request = _request(compressed_url(handle))
        try:
            with _OPENER.open(request, timeout=timeout_s) as response, open(download, "wb") as out:
                expected = response.headers.get("Content-Length")
                received = 0
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    received += len(chunk)
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
        if expected is not None and received != int(expected):
            raise HandleError(f"Module archive {shown} is truncated: received {received} of {expected} bytes.")
        _extract_into(download, staging, handle)
        os.remove(download)


class BeamFileSystemResolver(Resolver):
    """`gs://` and `s3://` module directories or archives, through Beam's filesystems."""

    def is_supported(self, handle: str) -> bool:
        return urllib.parse.urlsplit(handle).scheme in ("gs", "s3")

    def __call__(self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResolvedModule:
        return _cached_resolve(handle, self._fetch, timeout_s)

    def _fetch(self, handle: str, staging: str) -> None:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        _ensure_filesystem_options()
        try:
            if archives.is_archive_name(handle):
                download = os.path.join(staging, "download.tar.gz")
                with (
                    FileSystems.open(handle, compression_type=CompressionTypes.UNCOMPRESSED) as src,
                    open(download, "wb") as out,
                ):
                    shutil.copyfileobj(src, out, _CHUNK)
                _extract_into(download, staging, handle)
                os.remove(download)
                return
            prefix = handle.rstrip("/") + "/"
            metadata = FileSystems.match([prefix + "**"])[0].metadata_list
        except HandleError:
            raise
        except Exception as e:  # Beam wraps backend errors in many types.
            raise HandleError(f"Module handle {redact(handle)!r} could not be read: {type(e).__name__}: {e}") from e
        if not metadata:
            raise HandleError(f"Module handle {redact(handle)!r} does not exist (no objects under {redact(prefix)}).")
        target = _single_root(staging)
        for item in metadata:
            rel = item.path[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            dest = os.path.realpath(os.path.join(target, rel))
            if not dest.startswith(os.path.realpath(target) + os.sep):
                raise HandleError(f"Module handle {redact(handle)!r} has an object outside the module: {rel!r}.")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with (
                FileSystems.open(item.path, compression_type=CompressionTypes.UNCOMPRESSED) as src,
                open(dest, "wb") as out,
            ):
                shutil.copyfileobj(src, out, _CHUNK)


def _ensure_filesystem_options() -> None:
    """Gives Beam's filesystems default options when no pipeline has set them yet.

    Beam's S3 filesystem refuses to work without options; a running pipeline
    sets its own (with e.g. `--s3_endpoint_url`) through `FileSystems.set_options`.
    Outside a pipeline, boto3 and google-cloud-storage read their settings from
    the environment (`AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`, credentials).
    """
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if getattr(FileSystems, "_pipeline_options", None) is None:
        FileSystems.set_options(PipelineOptions([]))


RESOLVERS: list[Resolver] = [LocalResolver(), HttpArchiveResolver(), BeamFileSystemResolver()]


def resolve(handle: str, timeout_s: float | None = None) -> ResolvedModule:
    """Resolves a handle to a local module directory with its fingerprint.

    Args:
      handle: any supported handle (see the module docstring).
      timeout_s: network timeout for remote handles (default 60 s).

    Returns:
      The resolved module.

    Raises:
      HandleError: unsupported scheme, missing module, download failure,
        corrupt or unsafe archive, or a directory that is not a module.
    """
    if not isinstance(handle, str) or not handle.strip():
        raise HandleError(f"Module handle must be a non-empty string, got {handle!r}.")
    for resolver in RESOLVERS:
        if resolver.is_supported(handle):
            return resolver(handle, DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
    scheme = urllib.parse.urlsplit(handle).scheme
    raise HandleError(f"Unsupported handle scheme {scheme!r} in {redact(handle)!r}; supported: {SUPPORTED_FORMS}.")


class _TfHubAdapter:
    """Adapts our resolvers to tensorflow_hub's registry protocol (returns a path)."""

    def is_supported(self, handle: str) -> bool:
        return any(r.is_supported(handle) for r in RESOLVERS)

    def __call__(self, handle: str) -> str:
        return resolve(handle).path


_registered = False


def register_with_tfhub() -> None:
    """Makes `hub.load`/`hub.resolve`/`hub.KerasLayer` resolve handles through this module."""
    global _registered
    if _registered:
        return
    from tensorflow_hub import registry

    registry.resolver.add_implementation(_TfHubAdapter())
    _registered = True
