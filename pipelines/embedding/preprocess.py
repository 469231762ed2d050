"""Preprocessing: texts validated and image files read (each record keyed by its content), images decoded.

`Preprocess` runs on every record, before the content join; `Decode` after it,
on the contents that still need a module call. The decoding rules and why
images are decoded where they are: docs/design/embedding.md.
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import io
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.embedding import content
from pipelines.embedding.config import PreprocessConfig
from pipelines.embedding.model_spec import ModelSpec
from pipelines.embedding.records import FAILURES, ContentGroup, Record, Stage, failed


def check_text(text: str, max_bytes: int) -> str | None:
    """Returns why `text` cannot be embedded, or None when it can."""
    if not text.strip():
        return "empty or whitespace-only text"
    if len(text) * 4 > max_bytes:  # Only texts that might be too long are encoded to count their bytes.
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            return f"text is {size} bytes, over max_text_bytes={max_bytes}"
    return None


class ImageError(ValueError):
    """An image refused before decoding (too many pixels)."""


def pillow_build() -> str:
    """Which Pillow decodes and resizes images here: `Pillow-SIMD 12.1.1.post0` or `Pillow 12.1.1`.

    Pillow-SIMD installs the same `PIL` package under another distribution name;
    it is the one in use when that distribution's version is `PIL.__version__`
    (a Pillow installed over it later overwrites its files and its version).
    """
    import PIL  # Pillow: only image jobs pay its import

    try:
        simd = importlib.metadata.version("pillow-simd")
    except importlib.metadata.PackageNotFoundError:
        simd = None
    return f"Pillow-SIMD {PIL.__version__}" if simd == PIL.__version__ else f"Pillow {PIL.__version__}"


def decode_image(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Decodes an encoded image into the float32 `[height, width, 3]` array in [0, 1] the module is fed.

    `unit_scale(decode_pixels(data, size, max_pixels))`: its arguments and
    errors are `decode_pixels`'.
    """
    return unit_scale(decode_pixels(data, size, max_pixels))


def decode_pixels(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Decodes an encoded image into a `[height, width, 3]` array of its resized pixels, not yet scaled.

    8-bit images (nearly all) come out as uint8, their samples x 255 of what
    the module is fed (`unit_scale` divides them); 16- and 32-bit integer
    grayscale as float32 already in [0, 1]. Keeping 8-bit pixels as bytes
    until the module call holds a quarter of the memory, and the division is
    done once per call on the whole batch (`model_handler`), with the same
    float32 results.

    Args:
      data: the encoded file (JPEG, PNG, or any format Pillow reads).
      size: (height, width) to resize to.
      max_pixels: larger images raise `ImageError` before decoding their pixels.

    Raises:
      ImageError: too many pixels.
      PIL.UnidentifiedImageError, OSError, ValueError: not an image, truncated, corrupt.
    """
    from PIL import Image, ImageOps  # Pillow: only image jobs pay its import

    height, width = size
    with Image.open(io.BytesIO(data)) as image:
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise ImageError(
                f"image is {image.width}x{image.height} = {pixels} pixels, over max_image_pixels={max_pixels}"
            )
        if image.mode == "F":
            raise ImageError("mode F images (32-bit float samples) have no standard range to scale to [0, 1]")
        side = max(height, width)  # Either orientation: EXIF rotation comes after.
        image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale that still covers the target.
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when there is nothing to turn
        if image.mode == "I" or image.mode.startswith("I;16"):
            return _gray16(image, (height, width))
        rgb: Image.Image = image
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(background, image.convert("RGBA"))
        if rgb.mode != "RGB":  # convert() of an RGB image would copy it
            rgb = rgb.convert("RGB")
        return np.asarray(rgb.resize((width, height), Image.Resampling.BILINEAR))


def unit_scale(pixels: np.ndarray) -> np.ndarray:
    """`decode_pixels`' output as float32 in [0, 1]: uint8 samples divided by 255, float32 as they are."""
    if pixels.dtype == np.uint8:
        return np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    return pixels


def _gray16(image: Any, size: tuple[int, int]) -> np.ndarray:
    """A 16-bit (`I;16*`) or 32-bit integer (`I`) grayscale image, scaled by 1/65535 and clipped to [0, 1].

    Pillow's own conversion to RGB clips samples at 255, which turns almost any
    16-bit image white.
    """
    from PIL import Image  # Pillow: only image jobs pay its import

    height, width = size
    gray = np.clip(np.asarray(image.convert("I"), dtype=np.float32), 0, 65535) / np.float32(65535.0)
    gray = np.asarray(Image.fromarray(gray, mode="F").resize((width, height), Image.Resampling.BILINEAR), np.float32)
    return np.repeat(gray[:, :, None], 3, axis=2)


class _ValidateText(beam.DoFn):
    """Dead-letters texts the module must not see; the others get their content hash."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes

    def process(self, record: Record) -> Iterator[Any]:
        problem = check_text(record.payload, self._max_bytes)
        if problem:
            yield failed(record.id, record.source, Stage.VALIDATE, problem)
        else:
            yield record._replace(content_hash=content.text_hash(record.payload))


def _read_file(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


class _HashImage(beam.DoFn):
    """Reads an image file and keys it by its content hash; its pixels are decoded later, only if it needs a module call."""

    def __init__(self, size: tuple[int, int]):
        self._size = size

    def process(self, record: Record) -> Iterator[Any]:
        try:
            data = _read_file(record.payload)
        except Exception as e:  # unreadable: this record's failure
            yield failed(record.id, record.source, Stage.DECODE, e)
            return
        yield record._replace(content_hash=content.image_hash(data, self._size))


def decode_content(group: ContentGroup, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """The pixels of an image `ContentGroup` whose payload is still its file path (`decode_pixels`).

    The file is read again: its hash proves it is the file that was keyed.

    Raises:
      OSError: the file cannot be read, or changed since it was keyed.
      ImageError, PIL.UnidentifiedImageError, ValueError: as `decode_pixels`.
    """
    data = _read_file(group.payload)
    if content.image_hash(data, size) != group.content_hash:
        raise OSError(f"{group.payload} changed while the job ran (its content hash differs from the first read)")
    return decode_pixels(data, size, max_pixels)


def _decode_group(group: ContentGroup, size: tuple[int, int], max_pixels: int) -> list[Any]:
    """The decoded `group`, or one dead letter per row when its file cannot be decoded."""
    try:
        image = decode_content(group, size, max_pixels)
    except Exception as e:  # Pillow raises many types for bad files; each is this content's failure.
        return group.failed(Stage.DECODE, e)
    return [group._replace(payload=image)]


class _DecodeImages(beam.DoFn):
    """Decodes batches of `ContentGroup`s' images side by side in `threads` threads, one batch ahead of the module.

    Pillow releases the GIL while it decodes and resizes, so the threads use
    the worker's cores. A batch is handed on when the next one arrives (or at
    the end of the bundle), and the next one is decoded meanwhile: while the
    module embeds batch k downstream, in this thread, the pool decodes batch
    k+1. At most two batches of pixels are held. Outputs keep their order.
    With one thread, each batch is decoded in the bundle's own thread when it
    arrives.
    """

    def __init__(self, size: tuple[int, int], max_pixels: int, threads: int):
        self._size = size
        self._max_pixels = max_pixels
        self._threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._ahead: tuple[list[concurrent.futures.Future], WindowedValue] | None = None

    def setup(self) -> None:
        if self._threads > 1:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, thread_name_prefix="hub-embed-decode")

    def start_bundle(self) -> None:
        self._ahead = None

    def _decode(self, group: ContentGroup) -> list[Any]:
        return _decode_group(group, self._size, self._max_pixels)

    def process(
        self, groups: list[ContentGroup], timestamp: Any = beam.DoFn.TimestampParam, window: Any = beam.DoFn.WindowParam
    ) -> Iterator[Any]:
        if self._pool is None:
            for group in groups:
                yield from self._decode(group)
            return
        previous = self._ahead
        self._ahead = (
            [self._pool.submit(self._decode, group) for group in groups],
            WindowedValue(None, timestamp, (window,)),
        )
        if previous is not None:
            yield from _emit(*previous)

    def finish_bundle(self) -> Iterator[Any]:
        if self._ahead is not None:
            previous, self._ahead = self._ahead, None
            yield from _emit(*previous)

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _emit(futures: list[concurrent.futures.Future], where: WindowedValue) -> Iterator[Any]:
    """A decoded batch's outputs in order, each in the window and with the timestamp of the batch they came in."""
    for future in futures:
        for output in future.result():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, where.with_value(output.value))
            else:
                yield where.with_value(output)


class Preprocess(beam.PTransform):
    """Validates texts or reads image files, and sets each record's `content_hash`.

    Returns:
      A `DoOutputsTuple`: `.records` (with `content_hash`) and `.failures`.
    """

    def __init__(self, cfg: PreprocessConfig, spec: ModelSpec):
        super().__init__()
        self._cfg = cfg
        self._spec = spec

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        if self._spec.kind == "image":
            fn: beam.DoFn = _HashImage(self._spec.resize_to)
        else:
            fn = _ValidateText(self._cfg.max_text_bytes)
        return records | beam.ParDo(fn).with_outputs(FAILURES, main="records")


class Decode(beam.PTransform):
    """Decodes the images of the `ContentGroup`s that need a module call; texts pass as they are, and so do
    images that the module's call threads decode (`in_calls`).

    Returns:
      A `DoOutputsTuple`: `.records` (`ContentGroup`s ready for the module) and `.failures`.
    """

    def __init__(self, cfg: PreprocessConfig, spec: ModelSpec, threads: int = 1, in_calls: bool = False):
        """Initializes the transform.

        Args:
          cfg: the preprocessing limits.
          spec: the module's input description.
          threads: images decoded side by side per worker process (see `_DecodeImages`).
          in_calls: images are left as paths, for the module's call threads to decode
            (`model_handler.HubModelHandler` with `calls` > 1); they pass as they are.
        """
        super().__init__()
        self._cfg = cfg
        self._spec = spec
        self._threads = threads
        self._in_calls = in_calls

    def expand(self, groups: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        if self._spec.kind != "image" or self._in_calls:
            return groups | beam.ParDo(_PassThrough()).with_outputs(FAILURES, main="records")
        # Batches of one module call's size: decoded side by side, then handed on to the module in order.
        size = self._spec.batch_size
        batches = groups | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
        fn = _DecodeImages(self._spec.resize_to, self._cfg.max_image_pixels, self._threads)
        return batches | "DecodeImages" >> beam.ParDo(fn).with_outputs(FAILURES, main="records")


class _PassThrough(beam.DoFn):
    def process(self, element: Any) -> Iterator[Any]:
        yield element
