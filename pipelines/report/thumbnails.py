"""Small inline thumbnails of an image table's images (JPEG data URIs), read from the paths the table records."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from PIL import Image

SIZE = 64
# An image file larger than this is not read for a thumbnail.
MAX_FILE_BYTES = 32 << 20


def thumbnail(path: str, size: int = SIZE) -> str | None:
    """A `data:image/jpeg;base64,...` URI of the image at `path` fitted in `size` pixels, or None if unreadable."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return None
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEGs decode at a fraction of their size
            small = image.convert("RGB")
            small.thumbnail((size, size))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a moved or unreadable image: its row shows its id only
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def thumbnails(paths: Sequence[str], size: int = SIZE) -> list[str | None]:
    """`thumbnail` of each path, in order."""
    return [thumbnail(path, size) for path in paths]
