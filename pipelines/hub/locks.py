"""Inter-process file locks: one `fcntl.flock` helper for the cache, exports and publishing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator


class LockTimeout(TimeoutError):
    """Another process held the lock for longer than the caller was willing to wait."""


class UnsafeLockFile(OSError):
    """The lock path is a symbolic link, a hard link to another file, or not a regular file: it is not used."""


def _open_lock_file(path: str) -> int:
    """Opens (creating) the lock file without following a link, and refuses one that is not a plain file of its own."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
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
    fd = _open_lock_file(path)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"Timed out after {timeout_s:.0f}s waiting for the lock {path}.") from None
                    time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid={os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
