"""`preprocess.decode_image`: EXIF orientation, colour modes, and the same pixels as Pillow's plain path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.models import photos
from pipelines.preprocess import ImageError, decode_image

MAX_PIXELS = 50_000_000


def _encoded(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_photos_decode_as_plain_pillow_does():
    for path in photos.photo_paths():
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(path) as image:
            expected = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR), np.float32) / 255
        np.testing.assert_array_equal(decode_image(data, (224, 224), MAX_PIXELS), expected.astype(np.float32))


@pytest.mark.parametrize("orientation, top, bottom", [(1, None, None), (6, "red", "blue"), (8, "blue", "red")])
def test_exif_orientation_is_applied(orientation, top, bottom):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = decode_image(_encoded(image, "PNG", exif=exif.tobytes()), (40, 20), MAX_PIXELS)
    assert pixels.shape == (40, 20, 3)
    if top is None:  # not turned: a 40x20 image stretched to 20 wide, 40 high keeps red left, blue right
        assert pixels[:, 2, 0].min() > 0.9 and pixels[:, -3, 2].min() > 0.9
        return
    channel = {"red": 0, "blue": 2}
    assert pixels[2, :, channel[top]].min() > 0.9 and pixels[-3, :, channel[bottom]].min() > 0.9


def test_modes_become_rgb_and_transparency_goes_over_white():
    gray = decode_image(_encoded(Image.new("L", (8, 8), 51), "PNG"), (4, 4), MAX_PIXELS)
    np.testing.assert_allclose(gray, np.full((4, 4, 3), 51 / 255, np.float32), atol=1e-6)
    clear = decode_image(_encoded(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), (4, 4), MAX_PIXELS)
    np.testing.assert_allclose(clear, np.ones((4, 4, 3), np.float32))
    palette = Image.new("RGB", (8, 8), (0, 255, 0)).convert("P")
    np.testing.assert_allclose(decode_image(_encoded(palette, "PNG"), (4, 4), MAX_PIXELS)[..., 1], 1.0)


def test_too_many_pixels_refused_from_the_header():
    with pytest.raises(ImageError, match=r"image is 30x20 = 600 pixels, over max_image_pixels=599"):
        decode_image(_encoded(Image.new("RGB", (30, 20))), (4, 4), 599)
