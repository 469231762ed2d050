"""Writing files and directories strictly inside one directory, whatever is already on disk."""

from __future__ import annotations

import errno
import os

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Unconfined(ValueError):
    """A path that would leave the directory, or that collides with what is there; the message says why."""


def relative_parts(name: str) -> tuple[str, ...]:
    """Splits a relative path (an archive entry's or an object's name) into its components.

    `.` components and empty ones (`a//b`, a trailing `/`) are dropped, so
    `./` is the root itself: `()`.

    Raises:
      Unconfined: the path is absolute (or has a drive letter), has a `..`
        component, or holds a NUL byte.
    """
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise Unconfined("has an absolute path")
    if "\0" in name:
        raise Unconfined("has a NUL byte in its name")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise Unconfined("contains '..'")
    return parts


class ConfinedDir:
    """Creates directories and new files under `root` through directory descriptors.

    Every component of every path is opened relative to its parent's
    descriptor with `O_NOFOLLOW`, and files are created with `O_EXCL`: a
    symbolic link anywhere on the way (planted, or left by anything) is
    refused rather than followed, and no existing file is ever overwritten,
    so nothing can be written outside `root` however long the paths are.
    Links are never created. Use it as a context manager.
    """

    def __init__(self, root: str):
        self._root_fd = os.open(root, _DIR_FLAGS)
        # The last parent opened, kept because entries usually come directory by directory.
        self._last: tuple[tuple[str, ...], int] | None = None

    def __enter__(self) -> ConfinedDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the descriptors held."""
        self._forget_last()
        os.close(self._root_fd)

    def _forget_last(self) -> None:
        if self._last is not None:
            os.close(self._last[1])
            self._last = None

    def _open_dir(self, parts: tuple[str, ...]) -> int:
        """A new descriptor for directory `parts` under the root, created (0755) where missing."""
        fd = os.dup(self._root_fd)
        for i, part in enumerate(parts):
            try:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
                    raise Unconfined(f"needs {'/'.join(parts[: i + 1])!r} to be a directory, and it is not") from None
                raise
            os.close(fd)
            fd = child
        return fd

    def _parent_fd(self, parents: tuple[str, ...]) -> int:
        if self._last is None or self._last[0] != parents:
            self._forget_last()
            self._last = (parents, self._open_dir(parents))
        return self._last[1]

    def make_dir(self, parts: tuple[str, ...]) -> None:
        """Makes directory `parts` (and its parents) under the root; an existing directory is fine."""
        if parts:
            self._parent_fd(parts)

    def create_file(self, parts: tuple[str, ...]) -> int:
        """Creates the new file `parts` (mode 0644, parents made as needed) and returns its descriptor for writing.

        Raises:
          Unconfined: `parts` is empty, a parent is not a directory, or the
            file exists already.
        """
        if not parts:
            raise Unconfined("names the directory itself, not a file")
        parent = self._parent_fd(parts[:-1])
        try:
            return os.open(parts[-1], _NEW_FILE_FLAGS, 0o644, dir_fd=parent)
        except FileExistsError:
            raise Unconfined("appears twice, or collides with a directory") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Unconfined("would be written through a symbolic link") from None
            raise
