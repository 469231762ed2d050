"""Resolver for local handles: a module directory or `.tar.gz`, as a plain path or a `file://` URL."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse

from pipelines.hub import archives
from pipelines.hub.errors import HandleError
from pipelines.hub.fingerprints import local_fingerprint
from pipelines.hub.module_cache import resolve_into_cache, unpack_into_staging
from pipelines.hub.module_dirs import require_module_dir
from pipelines.hub.resolver import DEFAULT_OPTIONS, DEFAULT_TIMEOUT_S, ResolvedModule, ResolveOptions, Resolver


def _file_url_path(handle: str) -> str:
    if handle.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(handle).path)
    return os.path.expanduser(handle)


class LocalResolver(Resolver):
    """A local directory (used in place) or `.tar.gz` (unpacked into the cache)."""

    def is_supported(self, handle: str) -> bool:
        """Plain paths and `file://` URLs (a Windows drive letter is a path, not a scheme)."""
        scheme = urllib.parse.urlsplit(handle).scheme
        return scheme in ("", "file") or (len(scheme) == 1 and handle[1:3] in (":\\", ":/"))

    def __call__(
        self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S, options: ResolveOptions = DEFAULT_OPTIONS
    ) -> ResolvedModule:
        """Resolves a local directory or archive (see `Resolver`)."""
        path = _file_url_path(handle)
        if not os.path.exists(path):
            raise HandleError(f"Module handle {handle!r} does not exist (no such file or directory: {path}).")
        if os.path.isdir(path):
            require_module_dir(path, handle)
            return ResolvedModule(handle, os.path.abspath(path), local_fingerprint(path, verify=options.verify_cache))
        if archives.is_archive_name(path):
            abspath = os.path.abspath(path)
            st = os.stat(abspath)
            # Key on path + size + mtime: a rewritten archive is a new entry.
            versioned = f"{abspath}#{st.st_size}-{st.st_mtime_ns}"

            def fetch(_handle: str, staging: str) -> None:
                unpack_into_staging(abspath, staging, handle, options.limits)

            resolved = resolve_into_cache(versioned, fetch, timeout_s, options)
            return dataclasses.replace(resolved, handle=handle)
        raise HandleError(
            f"Module handle {handle!r} is a file but not a module archive (expected a directory or "
            f"one of {', '.join(archives.ARCHIVE_SUFFIXES)})."
        )
