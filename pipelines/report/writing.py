"""A report written whole or not at all: local files through a temporary file and a rename, object stores in one write."""

from __future__ import annotations

import os
import tempfile
import urllib.parse

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding.config import TMP_PREFIX
from pipelines.embedding.paths import is_local


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path`: local, gs:// or s3://.

    A local file is written beside its destination and renamed over it, so a reader never sees half a
    page; an object store's object appears only when its upload completes.
    """
    data = text.encode("utf-8")
    if is_local(path):
        path = urllib.parse.urlsplit(path).path if path.startswith("file://") else path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # Named as a run's temporary files are: a process killed mid-write leaves what the next commit removes.
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}report-", suffix=".html", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return
    with FileSystems.create(path, mime_type="text/html", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
