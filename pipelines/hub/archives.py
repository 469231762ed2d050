"""Module archives (`.tar.gz`): their names, packing a module, and the error unpacking one raises."""

from __future__ import annotations

import os
import tarfile

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class ArchiveError(ValueError):
    """An archive that cannot be unpacked: corrupt, truncated or unsafe."""


def is_archive_name(name: str) -> bool:
    """Returns True when `name` (a path or URL path) names a module archive."""
    return name.split("?", 1)[0].endswith(ARCHIVE_SUFFIXES)


def pack_dir(src_dir: str, tar_path: str) -> str:
    """Packs the contents of `src_dir` into a gzip'd tar at `tar_path`.

    Entries are stored relative to the directory root (no leading folder), the
    layout TF Hub's compressed format uses. The archive is written to a
    temporary name and renamed, so a crash never leaves a truncated archive.

    Args:
      src_dir: directory to pack.
      tar_path: destination file, conventionally ending in `.tar.gz`.

    Returns:
      `tar_path`.
    """
    tmp_path = f"{tar_path}.tmp-{os.getpid()}"
    with tarfile.open(tmp_path, "w:gz") as tar:
        for root, dirs, files in os.walk(src_dir):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                tar.add(full, arcname=os.path.relpath(full, src_dir), recursive=False)
    os.replace(tmp_path, tar_path)
    return tar_path
