"""Inter-process file locks: one `fcntl.flock` helper for the cache, exports and publishing."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator


class LockTimeout(TimeoutError):
    """Another process held the lock for longer than the caller was willing to wait."""


@contextlib.contextmanager
def file_lock(path: str, timeout_s: float | None = None) -> Iterator[None]:
    """Holds an exclusive `flock` on `path` (created if missing) for the `with` block.

    The kernel releases the lock when its holder exits or dies, so a crashed
    holder never leaves a stale lock behind. The holder's host and pid are
    written into the file to help whoever is debugging a wait.

    Args:
      path: the lock file.
      timeout_s: give up after this many seconds; None waits for as long as it takes.

    Raises:
      LockTimeout: the lock was not acquired within `timeout_s`.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
