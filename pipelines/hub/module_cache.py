"""The cache of fetched modules: each entry built in a staging directory and renamed into place under a lock."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable

from pipelines.hub import cache_entries, extraction, fingerprints, locks
from pipelines.hub.archives import ArchiveError
from pipelines.hub.cache_files import cache_dir, make_private_dir
from pipelines.hub.errors import HandleError
from pipelines.hub.limits import LimitExceeded, Limits
from pipelines.hub.module_dirs import require_module_dir
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import DEFAULT_OPTIONS, ResolvedModule, ResolveOptions

# Seconds to wait for another process's resolution of the same handle, on top of the network timeout.
LOCK_WAIT_MARGIN_S = 300

Fetch = Callable[[str, str], None]
"""`fetch(handle, staging)`: writes the module into `staged_module_dir(staging)`."""


def staged_module_dir(staging: str) -> str:
    """The directory inside a staging directory that a fetch fills with the module's files."""
    return os.path.join(staging, "module")


def unpack_into_staging(tar_path: str, staging: str, handle: str, limits: Limits) -> None:
    """Unpacks a module archive into `staged_module_dir(staging)`, refusing unsafe archives.

    Raises:
      HandleError: the archive is corrupt, truncated, unsafe, or over one of `limits`.
    """
    target = staged_module_dir(staging)
    os.mkdir(target, 0o700)
    try:
        extraction.safe_extract(tar_path, target, source=redact(handle), limits=limits)
    except (ArchiveError, LimitExceeded) as e:
        raise HandleError(str(e)) from e


def resolve_into_cache(
    handle: str, fetch: Fetch, timeout_s: float, options: ResolveOptions = DEFAULT_OPTIONS
) -> ResolvedModule:
    """Returns the cache entry for `handle`, building it with `fetch` unless it is complete already.

    A complete entry is used only once its files are checked against what was
    recorded when it was cached (see `cache_entries.verified_fingerprint`);
    one that no longer matches is fetched again.

    Args:
      handle: the key of the entry (for a local archive, its path with size and mtime).
      fetch: fills a staging directory with the module (see `Fetch`).
      timeout_s: the network timeout; another process building the same entry
        is waited for that long plus `LOCK_WAIT_MARGIN_S`.
      options: `verify_cache` re-hashes a complete entry's files.

    Raises:
      HandleError: the fetch failed, the result is not a module, another
        process held the entry's lock for too long, or the lock file is unsafe.
    """
    root = cache_dir()
    key = hashlib.sha1(handle.encode()).hexdigest()
    module_dir = os.path.join(root, key)

    def completed() -> ResolvedModule | None:
        fingerprint = cache_entries.verified_fingerprint(handle, module_dir, full=options.verify_cache)
        return ResolvedModule(handle, module_dir, fingerprint) if fingerprint else None

    done = completed()
    if done:
        return done
    lock_wait_s = timeout_s + LOCK_WAIT_MARGIN_S
    try:
        with locks.file_lock(module_dir + ".lock", lock_wait_s):
            return completed() or _build_entry(handle, fetch, root, key)
    except locks.LockTimeout:
        raise HandleError(
            f"Timed out after {lock_wait_s:.0f}s waiting for another process to finish resolving {redact(handle)!r}."
        ) from None
    except locks.UnsafeLockFile as e:
        raise HandleError(f"Module handle {redact(handle)!r} cannot be cached: {e}") from None


def _build_entry(handle: str, fetch: Fetch, root: str, key: str) -> ResolvedModule:
    """Builds cache entry `key` in a private staging dir and renames it into place (caller holds its lock)."""
    module_dir = os.path.join(root, key)
    # We hold the lock: anything left for this key is debris of a crashed run, or an entry that failed its check.
    staging_root = make_private_dir(os.path.join(root, ".staging"))
    for name in os.listdir(staging_root):
        if name.startswith(key + "."):
            shutil.rmtree(os.path.join(staging_root, name), ignore_errors=True)
    cache_entries.remove_record(module_dir)
    if os.path.islink(module_dir):
        os.remove(module_dir)
    elif os.path.exists(module_dir):
        shutil.rmtree(module_dir)
    staging = os.path.join(staging_root, f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    os.mkdir(staging, 0o700)
    try:
        fetch(handle, staging)
        module_root = staged_module_dir(staging)
        require_module_dir(module_root, redact(handle))
        fingerprint = fingerprints.fingerprint_dir(module_root)
        os.rename(module_root, module_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cache_entries.write_record(handle, module_dir, fingerprint)
    return ResolvedModule(handle, module_dir, fingerprint)
