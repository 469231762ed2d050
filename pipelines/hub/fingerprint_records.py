"""JSON records about a module (its description, its output sizes) stored under its fingerprint."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pipelines.hub.cache_files import cache_dir, make_private_dir, write_text_atomically

_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def _record_path(fingerprint: str, kind: str) -> str | None:
    if not _FINGERPRINT.fullmatch(fingerprint or "") or not kind.isidentifier():
        return None
    return os.path.join(cache_dir(), "by-fingerprint", f"{fingerprint.replace(':', '-')}.{kind}.json")


def read_record(fingerprint: str, kind: str) -> dict[str, Any] | None:
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


def write_record(fingerprint: str, kind: str, record: dict[str, Any]) -> bool:
    """Stores a JSON object about a module, keyed by its fingerprint, atomically.

    A record is derived from the module's files only, so the fingerprint
    (their content hash) is its whole key. A write that fails (read-only or
    full disk) is skipped: the records only save work.

    Args:
      fingerprint: the module's content fingerprint (`sha256:<hex>`).
      kind: what the record holds (e.g. "description"), an identifier.
      record: the JSON object to store.

    Returns:
      True when the record was written.
    """
    path = _record_path(fingerprint, kind)
    if path is None:
        return False
    try:
        make_private_dir(os.path.dirname(path))
        write_text_atomically(path, json.dumps({**record, "fingerprint": fingerprint}, sort_keys=True))
    except OSError:
        return False
    return True
