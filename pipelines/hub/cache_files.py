"""Where the module cache lives, its private directories, and writing a file into it atomically."""

from __future__ import annotations

import os
import uuid

# Read and copy size for module files and downloads.
CHUNK_BYTES = 1 << 20


def make_private_dir(path: str) -> str:
    """Creates directory `path` (and its parents) if missing, the directory itself readable by its owner only (0700).

    An existing directory keeps its mode: the operator may have shared it on purpose.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def cache_dir() -> str:
    """Returns the module cache directory (created on demand, 0700).

    `$HUB_EMBED_CACHE_DIR`, else `$TFHUB_CACHE_DIR`, else `~/.cache/hub-embed/modules`.
    """
    path = (
        os.environ.get("HUB_EMBED_CACHE_DIR")
        or os.environ.get("TFHUB_CACHE_DIR")
        or os.path.join(os.path.expanduser("~"), ".cache", "hub-embed", "modules")
    )
    return make_private_dir(path)


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` to a new private file beside `path`, syncs it, and renames it over `path`.

    A reader sees either the old file or the whole new one, never a part. The
    temporary file is created afresh (never through a link).
    """
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
