"""A sprite image for TensorBoard's Embedding Projector: one thumbnail per point, in a square grid."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageOps

# The projector draws sprites from one texture; WebGL guarantees no more than this many pixels a side.
MAX_SPRITE_PIXELS = 8192
MAX_THUMBNAIL = 64
_BACKGROUND = (255, 255, 255)
_MISSING = (200, 200, 200)


def thumbnail_size(count: int) -> int:
    """The side of each square thumbnail for `count` points: at most 64, and the grid within 8192 pixels."""
    side = max(1, math.ceil(math.sqrt(count)))
    return max(1, min(MAX_THUMBNAIL, MAX_SPRITE_PIXELS // side))


def write_sprite(images: Sequence[str], path: str) -> int:
    """Writes the thumbnails of `images` (local paths or gs://, s3:// URLs) as one PNG grid, row by row.

    Point `i` is at column `i % side`, row `i // side` of a `side x side` grid, as the projector reads it.
    An image that cannot be read or decoded gets a gray tile, so every point keeps its place.

    Args:
      images: the image files, in the order of the projector's points.
      path: the PNG file to write.

    Returns:
      The thumbnails' side in pixels (the projector config's `single_image_dim`).
    """
    size = thumbnail_size(len(images))
    side = max(1, math.ceil(math.sqrt(len(images))))
    sprite = Image.new("RGB", (side * size, side * size), _BACKGROUND)
    for i, image in enumerate(images):
        sprite.paste(_thumbnail(image, size), ((i % side) * size, (i // side) * size))
    sprite.save(path, format="PNG")
    return size


def _thumbnail(image: str, size: int) -> Image.Image:
    """The image scaled to fit a `size` square (aspect kept, centred), or a gray tile when it cannot be read."""
    try:
        with FileSystems.open(image, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (size, size))  # JPEG decodes straight at a reduced scale
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception:  # noqa: BLE001 - any unreadable or undecodable file: the point keeps a blank tile
        return Image.new("RGB", (size, size), _MISSING)
    picture = ImageOps.contain(picture, (size, size))  # scaled up or down to fill the tile's longer side
    tile = Image.new("RGB", (size, size), _BACKGROUND)
    tile.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return tile
