"""Where the module cache lives, and writing a file into it atomically."""

from __future__ import annotations

import os
import uuid

# Read and copy size for module files and downloads.
CHUNK_BYTES = 1 << 20


def cache_dir() -> str:
    """Returns the module cache directory (created on demand).

    `$HUB_EMBED_CACHE_DIR`, else `$TFHUB_CACHE_DIR`, else `~/.cache/hub-embed/modules`.
    """
    path = (
        os.environ.get("HUB_EMBED_CACHE_DIR")
        or os.environ.get("TFHUB_CACHE_DIR")
        or os.path.join(os.path.expanduser("~"), ".cache", "hub-embed", "modules")
    )
    os.makedirs(path, exist_ok=True)
    return path


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` to a private temporary file beside `path`, syncs it, and renames it over `path`.

    A reader sees either the old file or the whole new one, never a part.
    """
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
