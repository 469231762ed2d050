"""Packing and safe unpacking of module archives (`.tar.gz`).

Unpacking never writes outside the destination: every entry is checked before
anything is extracted, and an archive with an absolute path, a `..` component,
a link that points outside, or a device/FIFO entry is refused as a whole.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zlib

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


def _check_member(member: tarfile.TarInfo, dest: str, source: str) -> None:
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"Unsafe archive {source}: entry {name!r} has an absolute path.")
    parts = posixpath.normpath(name).split("/")
    if ".." in parts or ".." in name.split("/"):
        raise ArchiveError(f"Unsafe archive {source}: entry {name!r} contains '..'.")
    if member.isdev() or member.isfifo():
        raise ArchiveError(f"Unsafe archive {source}: entry {name!r} is a device or FIFO.")
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        else:
            resolved = posixpath.normpath(target)
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise ArchiveError(f"Unsafe archive {source}: link {name!r} points outside the module ({target!r}).")
    final = os.path.realpath(os.path.join(dest, name))
    if not (final == dest or final.startswith(dest + os.sep)):
        raise ArchiveError(f"Unsafe archive {source}: entry {name!r} lands outside the target directory.")


def safe_extract(tar_path: str, dest: str, source: str | None = None) -> None:
    """Extracts a (gzip'd) tar into `dest` after checking every entry.

    Args:
      tar_path: local archive file.
      dest: existing, empty destination directory.
      source: how to name the archive in error messages (defaults to `tar_path`).

    Raises:
      ArchiveError: the file is not a readable tar/tar.gz (truncated, not gzip,
        empty) or one of its entries is unsafe. Nothing is extracted then.
    """
    source = source or tar_path
    dest = os.path.realpath(dest)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            if not members:
                raise ArchiveError(f"Module archive {source} is empty.")
            for member in members:
                _check_member(member, dest, source)
            tar.extractall(dest, members=members, filter="data")
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ArchiveError(
            f"Module archive {source} is not a valid .tar.gz (truncated, corrupt or not gzip): {e}"
        ) from e
