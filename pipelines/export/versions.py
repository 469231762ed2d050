"""Where module versions live (`<root>/<name>/<version>/`), which number an export takes, and its lock."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator

from pipelines.export.errors import ExportError
from pipelines.hub import locks

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TEMP_PREFIX = ".export-"
_LOCK_NAME = ".lock"


def version_dir(root: str, name: str, version: int) -> str:
    """Returns `<root>/<name>/<version>`."""
    return os.path.join(root, name, str(version))


def list_versions(root: str, name: str) -> list[int]:
    """Returns the published versions of `name` under `root`, ascending."""
    try:
        entries = os.listdir(os.path.join(root, name))
    except FileNotFoundError:
        return []
    return sorted(int(e) for e in entries if e.isdigit() and os.path.isdir(os.path.join(root, name, e)))


def latest_version(root: str, name: str) -> int | None:
    """Returns the highest published version of `name`, or None if there is none."""
    versions = list_versions(root, name)
    return versions[-1] if versions else None


def check_name(name: str) -> None:
    """Raises ExportError unless `name` can name a module (letters, digits, `.`, `_`, `-`; not only digits)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.isdigit():
        raise ExportError(
            f"Invalid module name {name!r}: use letters, digits, '.', '_' or '-' (starting with a letter or "
            "digit, not only digits, at most 128 characters)."
        )


@contextlib.contextmanager
def locked_name_dir(root: str, name: str) -> Iterator[str]:
    """Holds the export lock of module `name` and yields its directory `<root>/<name>`.

    Exports of one name are serialized by an `fcntl` lock on
    `<root>/<name>/.lock`, so concurrent exporters get distinct versions.
    Temporary directories left by crashed exports are removed once the lock
    is held.
    """
    name_dir = os.path.join(root, name)
    os.makedirs(name_dir, exist_ok=True)
    with locks.file_lock(os.path.join(name_dir, _LOCK_NAME)):
        _remove_stale_temps(name_dir)
        yield name_dir


def choose_version(root: str, name: str, version: int | None) -> int:
    """Picks the version to write; the caller holds the name's lock (`locked_name_dir`).

    Args:
      root: local directory holding all modules.
      name: module name.
      version: the version asked for, or None for the highest existing + 1.

    Raises:
      ExportError: not a positive integer, or that version exists already.
    """
    if version is None:
        return (latest_version(root, name) or 0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"Module version must be a positive integer, got {version!r}.")
    if os.path.exists(version_dir(root, name, version)):
        raise ExportError(
            f"Version {version} of module {name!r} already exists at {version_dir(root, name, version)}; "
            "versions are never overwritten (omit the version to write the next one)."
        )
    return version


def temp_dir(name_dir: str, version: int) -> str:
    """A fresh hidden directory in `name_dir` to write `version` into before it is renamed to its version."""
    return os.path.join(name_dir, f"{_TEMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove_stale_temps(name_dir: str) -> None:
    """Deletes temp dirs of crashed exports (safe: the caller holds the name lock)."""
    for entry in os.listdir(name_dir):
        if entry.startswith(_TEMP_PREFIX):
            shutil.rmtree(os.path.join(name_dir, entry), ignore_errors=True)
