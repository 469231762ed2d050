"""`fcntl` locks in a local output: the commit lock, and the mark each live run holds on its temp directory.

The kernel releases a lock when the process holding it ends, however it ends,
so a lock that can be taken proves its holder gone. Lock files are opened
without following links and must be plain files with one name. Why the commit
works this way: docs/design/embedding.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from pipelines.embedding.config import COMMIT_LOCK
from pipelines.hub import locks

# Inside a run's temp directory: held by the run's launcher from graph construction until it exits.
LIVE_MARK = ".live.lock"
# How long a commit waits for another run's commit to finish (a commit holds the lock for seconds).
COMMIT_LOCK_WAIT_S = 600.0

# Temp directory -> descriptor of its live mark, for the runs this process launched.
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def commit_lock(output: str, timeout_s: float = COMMIT_LOCK_WAIT_S) -> Iterator[None]:
    """Holds the commit lock of a local output directory (created if missing) for the `with` block.

    The lock file (`COMMIT_LOCK` in the output) is removed by its holder on
    the way out, so a committed table's directory holds only the table. A
    waiter that then locks the removed file sees that the path no longer names
    it, and locks the path afresh.

    Raises:
      locks.UnsafeLockFile: the lock file is a link or not a plain file.
      locks.LockTimeout: another commit held it for more than `timeout_s`.
    """
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, COMMIT_LOCK)
    while True:
        fd = locks.open_lock_file(path)
        try:
            locks.lock(fd, path, timeout_s, what="commit lock", poll_s=0.05)
            held = os.fstat(fd)
            try:
                named = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                named = None
        except BaseException:
            os.close(fd)
            raise
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # its holder removed the file we locked: lock the one the path names now
    try:
        locks.stamp(fd)
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def mark_live(tmp_dir: str) -> None:
    """Creates a run's temp directory and holds its live mark until `release` or the end of this process.

    Call it with the output's commit lock held, before any worker writes
    into `tmp_dir`: a commit then never sees the directory without its mark.
    """
    os.makedirs(tmp_dir, exist_ok=True)
    fd = locks.open_lock_file(os.path.join(tmp_dir, LIVE_MARK))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file in a new directory: nobody else holds it
        locks.stamp(fd)
    except BaseException:
        os.close(fd)
        raise
    _HELD[os.path.abspath(tmp_dir)] = fd


def release(tmp_dir: str) -> None:
    """Lets go of a live mark this process holds (nothing if it holds none)."""
    fd = _HELD.pop(os.path.abspath(tmp_dir), None)
    if fd is not None:
        os.close(fd)


def is_gone(tmp_dir: str) -> bool:
    """True when the run that owns `tmp_dir` has provably ended: nobody holds its live mark.

    A temp directory without a mark was not made by a launcher that marks its
    runs (an older version, or a directory made by hand), and counts as gone.
    A mark that cannot be opened safely (a link, say) counts as held.
    """
    try:
        fd = locks.open_lock_file(os.path.join(tmp_dir, LIVE_MARK), create=False)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
