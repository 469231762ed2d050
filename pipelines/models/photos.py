"""The bundled photos (`pipelines/data/images/`) and the crops and resizes used to check image modules.

`VARIANTS` turns each photo into several 224x224 RGB inputs with Pillow and
NumPy only, so the same pixels can be produced inside the project and in the
separate PyTorch environment that computes the reference outputs
(`tests/data/make_efficientnet_reference.py`):

* `resize`: the whole photo stretched to 224x224 (bilinear), as the embedding
  pipeline resizes images;
* `center-crop`: the ImageNet evaluation crop (short side to 256, bicubic,
  centre 224x224);
* `crop-top-left` / `crop-bottom-right`: the top-left / bottom-right 60% of
  each side, resized (bilinear);
* `downscaled`: resized to 112x112 and back (bilinear), a blurred copy;
* `flipped`: `resize` mirrored left to right.

The licences of the photos are in `pipelines/data/images/LICENSE.md`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import numpy as np

PHOTOS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "images")
SIZE = 224


def photo_paths() -> list[str]:
    """The bundled photos (`*.jpg`), sorted by name."""
    return sorted(glob.glob(os.path.join(PHOTOS_DIR, "*.jpg")))


def _rgb(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _resize(image, size: int = SIZE, resample: str = "BILINEAR"):
    from PIL import Image

    return image.resize((size, size), getattr(Image.Resampling, resample))


def _center_crop(image):
    from PIL import Image

    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    left, top = (image.width - SIZE) // 2, (image.height - SIZE) // 2
    return image.crop((left, top, left + SIZE, top + SIZE))


def _crop(image, left: float, top: float, right: float, bottom: float):
    w, h = image.size
    return _resize(image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h))))


def _flip(image):
    from PIL import Image

    return _resize(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT)


VARIANTS: dict[str, Callable] = {
    "resize": _resize,
    "center-crop": _center_crop,
    "crop-top-left": lambda image: _crop(image, 0.0, 0.0, 0.6, 0.6),
    "crop-bottom-right": lambda image: _crop(image, 0.4, 0.4, 1.0, 1.0),
    "downscaled": lambda image: _resize(_resize(image, SIZE // 2)),
    "flipped": _flip,
}


def variants(paths: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Every variant of every photo.

    Args:
      paths: photo files (default: `photo_paths()`).

    Returns:
      Names `<file>:<variant>` and uint8 pixels `[N, 224, 224, 3]`, photo by photo in `VARIANTS` order.
    """
    names, images = [], []
    for path in paths or photo_paths():
        image = _rgb(path)
        for variant, make in VARIANTS.items():
            names.append(f"{os.path.basename(path)}:{variant}")
            images.append(np.asarray(make(image), dtype=np.uint8))
    return names, np.stack(images)
