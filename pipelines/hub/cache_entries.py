"""A cache entry's record (`<key>.fingerprint`): what marks it complete, and checking its files against it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

from pipelines.hub import fingerprints
from pipelines.hub.cache_files import write_text_atomically
from pipelines.hub.module_manifest import MANIFEST_NAME
from pipelines.hub.redaction import redact

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".fingerprint"


def _manifest_sha256(module_dir: str) -> str | None:
    path = os.path.join(module_dir, MANIFEST_NAME)
    return fingerprints.file_sha256(path) if os.path.isfile(path) else None


def write_record(handle: str, module_dir: str, fingerprint: str) -> None:
    """Records a complete entry: its fingerprint, its files' sizes and times, and its manifest's hash.

    Written last, atomically: a reader that finds it finds the whole module.
    """
    record = {
        "handle": redact(handle),
        "fingerprint": fingerprint,
        "files": fingerprints.stat_signature(module_dir, with_manifest=True),
        "manifest_sha256": _manifest_sha256(module_dir),
        "resolved_at": time.time(),
    }
    write_text_atomically(module_dir + RECORD_SUFFIX, json.dumps(record))


def remove_record(module_dir: str) -> None:
    """Marks the entry incomplete (before it is rebuilt)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(module_dir + RECORD_SUFFIX)


def _read(module_dir: str) -> dict[str, Any] | None:
    try:
        with open(module_dir + RECORD_SUFFIX) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        return None
    return record if os.path.isdir(module_dir) and not os.path.islink(module_dir) else None


def _hashes_match(module_dir: str, record: dict[str, Any]) -> bool:
    if fingerprints.fingerprint_dir(module_dir) != record["fingerprint"]:
        return False
    # A record written before manifests were hashed has no "manifest_sha256": its fingerprint is all it vouches for.
    return "manifest_sha256" not in record or _manifest_sha256(module_dir) == record["manifest_sha256"]


def verified_fingerprint(handle: str, module_dir: str, full: bool = False) -> str | None:
    """The fingerprint of a complete entry whose files are still those it was cached with, else None.

    The cheap check compares the files' names, sizes and modification times
    with those recorded when the entry was cached: no file is read. When they
    differ (or `full` is set, or the record predates this check), every file
    is hashed again; matching hashes refresh the record, and a mismatch (a
    file added, removed or changed since) is logged and makes the entry count
    as absent, so that the caller fetches it again.

    Args:
      handle: the entry's handle, for the log line (redacted).
      module_dir: the entry's module directory.
      full: hash the files even when their sizes and times match.
    """
    record = _read(module_dir)
    if record is None:
        return None
    try:
        if not full and record.get("files") == fingerprints.stat_signature(module_dir, with_manifest=True):
            return str(record["fingerprint"])
        matches = _hashes_match(module_dir, record)
    except OSError:
        matches = False
    if not matches:
        logger.warning(
            "The cached module %s (%s) no longer holds the files it was cached with; fetching it again.",
            redact(handle),
            module_dir,
        )
        return None
    with contextlib.suppress(OSError):
        write_record(handle, module_dir, record["fingerprint"])
    return str(record["fingerprint"])
