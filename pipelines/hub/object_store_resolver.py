"""Resolver for `gs://` and `s3://` handles: a module directory or `.tar.gz`, read through Beam's filesystems."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from pipelines.hub import archives
from pipelines.hub.beam_filesystems import ensure_filesystem_options
from pipelines.hub.cache_files import CHUNK_BYTES
from pipelines.hub.confined_dir import ConfinedDir, Unconfined, relative_parts
from pipelines.hub.errors import HandleError
from pipelines.hub.limits import Limits
from pipelines.hub.module_cache import resolve_into_cache, staged_module_dir, unpack_into_staging
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import DEFAULT_OPTIONS, DEFAULT_TIMEOUT_S, ResolvedModule, ResolveOptions, Resolver
from pipelines.hub.stall_guard import Progress, Stalled, run_guarded


class _Download:
    """Bytes downloaded for one module, counted against `--max-download-bytes` as they arrive."""

    def __init__(self, handle: str, limits: Limits):
        self.limits = limits
        self.subject = f"Module handle {redact(handle)!r}"
        self.received = 0

    def add(self, n: int) -> None:
        self.received += n
        if self.received > self.limits.max_download_bytes:
            raise HandleError(
                self.limits.exceeded(
                    "max_download_bytes", self.subject, f"more than {self.limits.max_download_bytes:,} bytes"
                )
            )


def _copy_object(path: str, fd: int, download: _Download, progress: Progress) -> None:
    """Copies one object into the new file `fd` (closed afterwards), counting and reporting each chunk."""
    # Beam is imported here, not at the top, to keep it out of light import paths (DAG files, the CLI's help).
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with os.fdopen(fd, "wb") as out, FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
        progress()
        for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
            download.add(len(chunk))
            out.write(chunk)
            progress()


class ObjectStoreResolver(Resolver):
    """`gs://` and `s3://` module directories or archives, copied once into the cache."""

    def is_supported(self, handle: str) -> bool:
        """`gs://` and `s3://` paths."""
        return urllib.parse.urlsplit(handle).scheme in ("gs", "s3")

    def __call__(
        self, handle: str, timeout_s: float = DEFAULT_TIMEOUT_S, options: ResolveOptions = DEFAULT_OPTIONS
    ) -> ResolvedModule:
        """Resolves an object-store path through the cache (see `Resolver`).

        The storage clients retry for minutes inside one call, so the
        transfer runs under `stall_guard`: it fails once `timeout_s` passes
        without an object listed or a chunk read.
        """

        def fetch(h: str, staging: str) -> None:
            ensure_filesystem_options()  # imports Beam: not a step of the transfer, so not under its timeout
            try:
                run_guarded(lambda progress: self._fetch(h, staging, options.limits, progress), timeout_s)
            except Stalled:
                raise HandleError(
                    f"Module handle {redact(h)!r} timed out after {timeout_s:.0f}s while reading (no progress)."
                ) from None
            if archives.is_archive_name(h):
                download = os.path.join(staging, "download.tar.gz")
                unpack_into_staging(download, staging, h, options.limits)
                os.remove(download)

        return resolve_into_cache(handle, fetch, timeout_s, options)

    def _fetch(self, handle: str, staging: str, limits: Limits, progress: Progress) -> None:
        """Copies the archive to `staging/download.tar.gz`, or the directory's objects into the staged module."""
        # Beam is imported here, not at the top, to keep it out of light import paths (DAG files, the CLI's help).
        from apache_beam.io.filesystems import FileSystems

        download = _Download(handle, limits)
        try:
            if archives.is_archive_name(handle):
                fd = os.open(os.path.join(staging, "download.tar.gz"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                _copy_object(handle, fd, download, progress)
                return
            prefix = handle.rstrip("/") + "/"
            metadata = FileSystems.match([prefix + "**"])[0].metadata_list
            progress()
            if not metadata:
                raise HandleError(
                    f"Module handle {redact(handle)!r} does not exist (no objects under {redact(prefix)})."
                )
            self._copy_dir(handle, prefix, metadata, staged_module_dir(staging), limits, download, progress)
        except HandleError:
            raise
        except Exception as e:  # Beam wraps backend errors in many types.
            raise HandleError(f"Module handle {redact(handle)!r} could not be read: {type(e).__name__}: {e}") from e

    def _copy_dir(
        self,
        handle: str,
        prefix: str,
        metadata: list[Any],
        target: str,
        limits: Limits,
        download: _Download,
        progress: Progress,
    ) -> None:
        """Copies a module directory's objects into `target`, within the limits and never outside it."""
        subject = f"Module handle {redact(handle)!r}"
        if len(metadata) > limits.max_archive_members:
            raise HandleError(limits.exceeded("max_archive_members", subject, f"{len(metadata):,} objects"))
        total = sum(int(getattr(item, "size_in_bytes", 0) or 0) for item in metadata)
        if total > limits.max_download_bytes:
            raise HandleError(limits.exceeded("max_download_bytes", subject, f"its objects hold {total:,} bytes"))
        os.mkdir(target, 0o700)
        with ConfinedDir(target) as confined:
            for item in metadata:
                rel = item.path[len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue
                length = len(rel.encode("utf-8", "surrogateescape"))
                if length > limits.max_member_path_length:
                    raise HandleError(
                        limits.exceeded("max_member_path_length", subject, f"an object's path has {length:,} bytes")
                    )
                try:
                    fd = confined.create_file(relative_parts(rel))
                except Unconfined as e:
                    raise HandleError(
                        f"Module handle {redact(handle)!r} has an unusable object {rel!r}: it {e}."
                    ) from None
                _copy_object(item.path, fd, download, progress)
