"""Inter-process file locks: one `fcntl.flock` helper for the cache, exports, publishing and the output's commit."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator


class LockError(OSError):
    """A lock file is unsafe to use, or its lock was not free in time."""


class LockTimeout(LockError, TimeoutError):
    """Another process held the lock for longer than the caller was willing to wait."""


class UnsafeLockFile(LockError):
    """The lock path is a symbolic link, a hard link to another file, or not a regular file: it is not used."""


def open_lock_file(path: str, create: bool = True) -> int:
    """Opens a lock file read-write without following a link; returns its descriptor.

    Args:
      path: the lock file.
      create: create it if missing (otherwise a missing file raises FileNotFoundError).

    Raises:
      UnsafeLockFile: `path` is a symbolic link, a hard link, or not a regular file.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafeLockFile(
                f"The lock file {path} is a symbolic link; a lock never follows links (remove it if you did not make it)."
            ) from e
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a hard link ({st.st_nlink} names)"
        raise UnsafeLockFile(f"The lock file {path} is {what}; it is not used (remove it if you did not make it).")
    return fd


def lock(fd: int, path: str, timeout_s: float | None, what: str = "lock", poll_s: float = 0.1) -> None:
    """Takes an exclusive `flock` on an open lock file, waiting at most `timeout_s` (None: as long as it takes).

    Raises:
      LockTimeout: another process held it for longer than `timeout_s`; the message names `what` and `path`.
    """
    if timeout_s is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LockTimeout(f"Another process held the {what} {path} for more than {timeout_s:.0f}s.") from None
            time.sleep(poll_s)


def stamp(fd: int) -> None:
    """Writes the holder's host and pid into a held lock file (for whoever debugs a wait)."""
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} pid={os.getpid()}\n".encode())


@contextlib.contextmanager
def file_lock(path: str, timeout_s: float | None = None) -> Iterator[None]:
    """Holds an exclusive `flock` on `path` (created if missing) for the `with` block.

    The kernel releases the lock when its holder exits or dies, so a crashed
    holder never leaves a stale lock behind. The holder's host and pid are
    written into the file to help whoever is debugging a wait.

    Args:
      path: the lock file.
      timeout_s: give up after this many seconds; None waits for as long as it takes.

    The file is opened with `O_NOFOLLOW` and must be a regular file with a
    single name, so a link planted at `path` can never make the holder
    truncate or write another file.

    Raises:
      LockTimeout: the lock was not acquired within `timeout_s`.
      UnsafeLockFile: `path` is a symbolic link, a hard link, or not a regular file.
    """
    fd = open_lock_file(path)
    try:
        lock(fd, path, timeout_s)
        stamp(fd)
        yield
    finally:
        os.close(fd)
