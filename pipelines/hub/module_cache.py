"""The cache of fetched modules: each entry built in a staging directory and renamed into place under a lock."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable

from pipelines.hub import archives, locks
from pipelines.hub.cache_files import cache_dir, write_text_atomically
from pipelines.hub.errors import HandleError
from pipelines.hub.fingerprints import fingerprint_dir
from pipelines.hub.module_dirs import require_module_dir
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import ResolvedModule

# Seconds to wait for another process's resolution of the same handle, on top of the network timeout.
LOCK_WAIT_MARGIN_S = 300

Fetch = Callable[[str, str], None]
"""`fetch(handle, staging)`: writes the module into `staged_module_dir(staging)`."""


def staged_module_dir(staging: str) -> str:
    """The directory inside a staging directory that a fetch fills with the module's files."""
    return os.path.join(staging, "module")


def unpack_into_staging(tar_path: str, staging: str, handle: str) -> None:
    """Unpacks a module archive into `staged_module_dir(staging)`, refusing unsafe archives.

    Raises:
      HandleError: the archive is corrupt, truncated or unsafe.
    """
    target = staged_module_dir(staging)
    os.makedirs(target)
    try:
        archives.safe_extract(tar_path, target, source=redact(handle))
    except archives.ArchiveError as e:
        raise HandleError(str(e)) from e


def resolve_into_cache(handle: str, fetch: Fetch, timeout_s: float) -> ResolvedModule:
    """Returns the cache entry for `handle`, building it with `fetch` unless it is complete already.

    Args:
      handle: the key of the entry (for a local archive, its path with size and mtime).
      fetch: fills a staging directory with the module (see `Fetch`).
      timeout_s: the network timeout; another process building the same entry
        is waited for that long plus `LOCK_WAIT_MARGIN_S`.

    Raises:
      HandleError: the fetch failed, the result is not a module, or another
        process held the entry's lock for too long.
    """
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
    lock_wait_s = timeout_s + LOCK_WAIT_MARGIN_S
    try:
        with locks.file_lock(module_dir + ".lock", lock_wait_s):
            return completed() or _build_entry(handle, fetch, root, key)
    except locks.LockTimeout:
        raise HandleError(
            f"Timed out after {lock_wait_s:.0f}s waiting for another process to finish resolving {redact(handle)!r}."
        ) from None


def _build_entry(handle: str, fetch: Fetch, root: str, key: str) -> ResolvedModule:
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
        module_root = staged_module_dir(staging)
        require_module_dir(module_root, redact(handle))
        fingerprint = fingerprint_dir(module_root)
        os.rename(module_root, module_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The fingerprint file marks the entry complete: written last, atomically.
    write_text_atomically(
        module_dir + ".fingerprint",
        json.dumps({"handle": redact(handle), "fingerprint": fingerprint, "resolved_at": time.time()}),
    )
    return ResolvedModule(handle, module_dir, fingerprint)
