"""Resolver for `gs://` and `s3://` handles: a module directory or `.tar.gz`, read through Beam's filesystems."""

from __future__ import annotations

import os
import shutil
import urllib.parse

from pipelines.hub import archives
from pipelines.hub.beam_filesystems import ensure_filesystem_options
from pipelines.hub.cache_files import CHUNK_BYTES
from pipelines.hub.errors import HandleError
from pipelines.hub.module_cache import resolve_into_cache, staged_module_dir, unpack_into_staging
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import DEFAULT_TIMEOUT_S, ResolvedModule, Resolver


class ObjectStoreResolver(Resolver):
    """`gs://` and `s3://` module directories or archives, copied once into the cache."""

    def is_supported(self, handle: str) -> bool:
        """`gs://` and `s3://` paths."""
        return urllib.parse.urlsplit(handle).scheme in ("gs", "s3")

    def __call__(self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResolvedModule:
        """Resolves an object-store path through the cache (see `Resolver`)."""
        return resolve_into_cache(handle, self._fetch, timeout_s)

    def _fetch(self, handle: str, staging: str) -> None:
        # Beam is imported here, not at the top, to keep it out of light import paths (DAG files, the CLI's help).
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        ensure_filesystem_options()
        try:
            if archives.is_archive_name(handle):
                download = os.path.join(staging, "download.tar.gz")
                with (
                    FileSystems.open(handle, compression_type=CompressionTypes.UNCOMPRESSED) as src,
                    open(download, "wb") as out,
                ):
                    shutil.copyfileobj(src, out, CHUNK_BYTES)
                unpack_into_staging(download, staging, handle)
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
        target = staged_module_dir(staging)
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
                shutil.copyfileobj(src, out, CHUNK_BYTES)
