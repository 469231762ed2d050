"""Content fingerprints of module directories (`sha256:<hex>`), remembered for local directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator

from pipelines.hub.cache_files import CHUNK_BYTES, cache_dir, make_private_dir, write_text_atomically
from pipelines.hub.module_manifest import MANIFEST_NAME


def _module_files(path: str, with_manifest: bool = False) -> Iterator[str]:
    """The relative paths of a module's files in a stable order, without its manifest unless asked."""
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), path)
            if with_manifest or rel != MANIFEST_NAME:
                yield rel


def file_sha256(path: str) -> str:
    """The SHA-256 of one file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        file_hash = bytes.fromhex(file_sha256(os.path.join(path, rel)))
        digest.update(rel.replace(os.sep, "/").encode() + b"\0" + file_hash)
    return "sha256:" + digest.hexdigest()


def stat_signature(path: str, with_manifest: bool = False) -> str:
    """A hash of the module files' names, sizes and modification times: cheap to compute, no file is read.

    Args:
      path: module directory.
      with_manifest: count `module.json` too (a fingerprint leaves it out).
    """
    parts = []
    for rel in _module_files(path, with_manifest):
        st = os.stat(os.path.join(path, rel))
        parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def local_fingerprint(path: str, verify: bool = False) -> str:
    """Returns the fingerprint of a local module directory, computed once.

    The result is stored in the cache, keyed by the directory's absolute path and
    a signature of its files' sizes and modification times, so an unchanged
    directory is hashed only once and a changed one is hashed again.

    Args:
      path: module directory.
      verify: hash the files even when the stored signature matches.
    """
    path = os.path.abspath(path)
    store = make_private_dir(os.path.join(cache_dir(), "local-fingerprints"))
    record_path = os.path.join(store, hashlib.sha1(path.encode()).hexdigest() + ".json")
    signature = stat_signature(path)
    with contextlib.suppress(OSError, ValueError):
        with open(record_path) as f:
            record = json.load(f)
        if record.get("signature") == signature and not verify:
            return record["fingerprint"]
    fingerprint = fingerprint_dir(path)
    write_text_atomically(record_path, json.dumps({"path": path, "signature": signature, "fingerprint": fingerprint}))
    return fingerprint
