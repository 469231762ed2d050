"""Content fingerprints of module directories (`sha256:<hex>`), remembered for local directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator

from pipelines.hub.cache_files import CHUNK_BYTES, cache_dir, write_text_atomically
from pipelines.hub.module_manifest import MANIFEST_NAME


def _module_files(path: str) -> Iterator[str]:
    """The relative paths of a module's files in a stable order, without its manifest."""
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
    for rel in _module_files(path):
        file_hash = hashlib.sha256()
        with open(os.path.join(path, rel), "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                file_hash.update(chunk)
        digest.update(rel.replace(os.sep, "/").encode() + b"\0" + file_hash.digest())
    return "sha256:" + digest.hexdigest()


def _stat_signature(path: str) -> str:
    """A hash of the module files' names, sizes and modification times."""
    parts = []
    for rel in _module_files(path):
        st = os.stat(os.path.join(path, rel))
        parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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
    write_text_atomically(record_path, json.dumps({"path": path, "signature": signature, "fingerprint": fingerprint}))
    return fingerprint
