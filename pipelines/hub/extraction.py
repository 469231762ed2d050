"""Unpacking a module archive entry by entry, confined to its destination and within its limits."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import tarfile
import zlib
from typing import IO, cast

from pipelines.hub.archives import ArchiveError
from pipelines.hub.cache_files import CHUNK_BYTES
from pipelines.hub.confined_dir import ConfinedDir, Unconfined, relative_parts
from pipelines.hub.limits import DEFAULT_LIMITS, RATIO_FLOOR_BYTES, LimitExceeded, Limits

# Most bytes read for the headers between two entries (a long name, pax attributes): no module needs more.
MAX_HEADER_BYTES = 1 << 20

# What reading a broken archive raises: tarfile's errors, a truncated stream, bad gzip/bz2/xz data, I/O.
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


def _shown(text: str, most: int = 96) -> str:
    """`text` quoted for a message, cut short when long (entry names may run to a kilobyte)."""
    return repr(text) if len(text) <= most else repr(text[:most]) + "..."


class _CountingReader:
    """Counts the bytes read from the archive file: the compressed side of the ratio."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


class _TarStream:
    """The uncompressed tar stream, counted and checked against the limits as tarfile reads it."""

    def __init__(self, decompressed: IO[bytes], compressed: _CountingReader, limits: Limits, subject: str):
        self._decompressed = decompressed
        self._compressed = compressed
        self._limits = limits
        self._subject = subject
        self.count = 0
        self.in_data = False  # True while an entry's contents are being copied out
        self.header_bytes = 0  # bytes read outside entry contents since the last entry began

    def read(self, size: int = -1) -> bytes:
        limits = self._limits
        data = self._decompressed.read(size)
        self.count += len(data)
        if not self.in_data:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                raise ArchiveError(f"{self._subject} has an entry header of more than {MAX_HEADER_BYTES:,} bytes.")
        if self.count > limits.max_unpacked_bytes:
            raise LimitExceeded(
                limits.exceeded("max_unpacked_bytes", self._subject, f"more than {limits.max_unpacked_bytes:,} bytes")
            )
        compressed = max(self._compressed.count, 1)
        if self.count > RATIO_FLOOR_BYTES and self.count > limits.max_compression_ratio * compressed:
            raise LimitExceeded(
                limits.exceeded(
                    "max_compression_ratio",
                    self._subject,
                    f"{self.count:,} bytes unpacked from {compressed:,} (over {self.count / compressed:.0f}:1)",
                )
            )
        return data


def _decompressed(raw: _CountingReader, magic: bytes) -> IO[bytes]:
    """The archive's tar stream: gzip, bzip2 and xz are recognised by their first bytes; else plain tar."""
    stream = cast(IO[bytes], raw)
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(stream, mode="rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.LZMAFile(stream, mode="rb"))
    return stream


def _refuse_link(member: tarfile.TarInfo, source: str) -> ArchiveError:
    """Why a link entry is refused; one that points outside the module says so."""
    name, target = member.name, member.linkname
    base = posixpath.dirname(name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        return ArchiveError(
            f"Unsafe archive {source}: link {_shown(name)} points outside the module ({_shown(target)})."
        )
    kind = "symbolic" if member.issym() else "hard"
    return ArchiveError(
        f"Unsafe archive {source}: entry {_shown(name)} is a {kind} link (to {_shown(target)}); "
        "module archives may hold only files and directories."
    )


def _check_member(member: tarfile.TarInfo, index: int, limits: Limits, source: str) -> tuple[str, ...]:
    """The entry's path components, once its count, path length, path and type pass; else raises."""
    subject = f"Module archive {source}"
    if index > limits.max_archive_members:
        raise LimitExceeded(limits.exceeded("max_archive_members", subject, f"more than {index - 1:,} entries"))
    name = member.name
    length = len(name.encode("utf-8", "surrogateescape"))
    if length > limits.max_member_path_length:
        raise LimitExceeded(
            limits.exceeded("max_member_path_length", subject, f"entry {_shown(name, 64)} has a {length:,}-byte path")
        )
    try:
        parts = relative_parts(name)
    except Unconfined as e:
        raise ArchiveError(f"Unsafe archive {source}: entry {_shown(name)} {e}.") from None
    if member.isdev() or member.isfifo():
        raise ArchiveError(f"Unsafe archive {source}: entry {_shown(name)} is a device or FIFO.")
    if member.issym() or member.islnk():
        raise _refuse_link(member, source)
    if not (member.isdir() or member.isreg()):
        raise ArchiveError(f"Unsafe archive {source}: entry {_shown(name)} is neither a file nor a directory.")
    return parts


def _copy_out(tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int, stream: _TarStream, source: str) -> None:
    """Copies a file entry's contents to the new file `fd`, and closes it."""
    stream.in_data = True
    try:
        src = tar.extractfile(member)
        while src is not None and (chunk := src.read(CHUNK_BYTES)):
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except OSError as e:
                    raise _unpack_failed(source, member, e) from e
    finally:
        stream.in_data = False
        os.close(fd)


def _unpack_failed(source: str, member: tarfile.TarInfo, e: OSError) -> ArchiveError:
    """A failure to write into the destination (a full disk, a name the file system refuses)."""
    return ArchiveError(f"Module archive {source} could not be unpacked: {e.strerror} ({_shown(member.name)}).")


def safe_extract(tar_path: str, dest: str, source: str | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
    """Extracts a tar (plain, gzip, bzip2 or xz) into the empty directory `dest`, entry by entry.

    The archive is read as a stream. Each entry is checked before it is
    written: its count and path length against `limits`, its path (no
    absolute path, no `..`) and its type (files and directories only: links,
    devices and FIFOs are refused). Files are created through `ConfinedDir`,
    which never follows a link and never overwrites, so what is written stays
    inside `dest` whatever the interpreter's `tarfile` would have resolved.
    Unpacked bytes and the compression ratio are counted as the stream is read.

    Args:
      tar_path: local archive file.
      dest: existing, empty destination directory.
      source: how to name the archive in error messages (defaults to `tar_path`).
      limits: the limits to enforce.

    Raises:
      ArchiveError: the file is not a readable archive, is empty, or holds an
        unsafe entry.
      LimitExceeded: the archive goes over one of `limits`.

    Either error stops the extraction at once; the caller removes `dest`.
    """
    source = source or tar_path
    with open(tar_path, "rb") as raw_file, ConfinedDir(dest) as confined:
        magic = raw_file.read(6)
        raw_file.seek(0)
        raw = _CountingReader(raw_file)
        try:
            stream = _TarStream(_decompressed(raw, magic), raw, limits, f"Module archive {source}")
            tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
        except _READ_ERRORS as e:
            raise _invalid(source, e) from e
        with tar:
            _extract_members(tar, stream, confined, limits, source)


def _invalid(source: str, e: BaseException) -> ArchiveError:
    return ArchiveError(f"Module archive {source} is not a valid .tar.gz (truncated, corrupt or not gzip): {e}")


def _extract_members(
    tar: tarfile.TarFile, stream: _TarStream, confined: ConfinedDir, limits: Limits, source: str
) -> None:
    index = 0
    while True:
        try:
            member = tar.next()
        except _READ_ERRORS as e:
            raise _invalid(source, e) from e
        if member is None:
            break
        tar.members.clear()  # type: ignore[attr-defined]  # a stream has no use for the entries read so far: keep memory flat
        stream.header_bytes = 0
        index += 1
        parts = _check_member(member, index, limits, source)
        if member.isreg() and stream.count + member.size > limits.max_unpacked_bytes:
            raise LimitExceeded(
                limits.exceeded(
                    "max_unpacked_bytes",
                    f"Module archive {source}",
                    f"entry {_shown(member.name)} of {member.size:,} bytes after {stream.count:,}",
                )
            )
        try:
            if member.isdir():
                confined.make_dir(parts)
                continue
            fd = confined.create_file(parts)
        except Unconfined as e:
            raise ArchiveError(f"Unsafe archive {source}: entry {_shown(member.name)} {e}.") from None
        except OSError as e:
            raise _unpack_failed(source, member, e) from e
        try:
            _copy_out(tar, member, fd, stream, source)
        except (ArchiveError, LimitExceeded):
            raise
        except _READ_ERRORS as e:
            raise _invalid(source, e) from e
    if index == 0:
        raise ArchiveError(f"Module archive {source} is empty.")
