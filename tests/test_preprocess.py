"""`preprocess.decode_image`: EXIF orientation, colour modes, and the same pixels as Pillow's plain path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.embedding.preprocess import ImageError, decode_image, pillow_build
from pipelines.models import photos

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


@pytest.mark.parametrize(
    "pil_version, simd_dist, expected",
    [
        ("12.1.1.post0", "12.1.1.post0", "Pillow-SIMD 12.1.1.post0"),
        ("12.1.1", None, "Pillow 12.1.1"),
        ("12.1.1", "12.1.1.post0", "Pillow 12.1.1"),  # Pillow installed over Pillow-SIMD: its files are Pillow's
    ],
)
def test_pillow_build_names_the_pillow_whose_files_are_loaded(pil_version, simd_dist, expected, monkeypatch):
    import importlib.metadata

    import PIL

    def version(name):
        if name == "pillow-simd" and simd_dist:
            return simd_dist
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(PIL, "__version__", pil_version)
    monkeypatch.setattr(importlib.metadata, "version", version)
    assert pillow_build() == expected


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


def test_pixels_stay_bytes_until_scaled_and_16_bit_gray_is_already_scaled():
    from pipelines.embedding.preprocess import decode_pixels, unit_scale

    for path in photos.photo_paths()[:2]:
        with open(path, "rb") as f:
            data = f.read()
        pixels = decode_pixels(data, (224, 224), MAX_PIXELS)
        assert pixels.dtype == np.uint8 and pixels.shape == (224, 224, 3)
        scaled = unit_scale(pixels)
        assert scaled.dtype == np.float32
        np.testing.assert_array_equal(scaled, pixels.astype(np.float32) / np.float32(255.0))
    deep = _encoded(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PNG")  # 16-bit gray: float32 already
    gray = decode_pixels(deep, (4, 4), MAX_PIXELS)
    assert gray.dtype == np.float32 and unit_scale(gray) is gray
    np.testing.assert_allclose(gray, 40000 / 65535, rtol=1e-6)


def test_too_many_pixels_refused_from_the_header():
    with pytest.raises(ImageError, match=r"image is 30x20 = 600 pixels, over max_image_pixels=599"):
        decode_image(_encoded(Image.new("RGB", (30, 20))), (4, 4), 599)


def _groups(tmp_path, count: int) -> list:
    """`count` image `ContentGroup`s (distinct JPEGs cut from a bundled photo), one row each."""
    from pipelines.embedding import content
    from pipelines.embedding.records import ContentGroup, Record

    with Image.open(photos.photo_paths()[0]) as photo:
        photo = photo.convert("RGB")
    groups = []
    for i in range(count):
        path = tmp_path / f"{i}.jpg"
        photo.crop((i * 7, 0, 300 + i * 7, 240)).save(path, quality=90)
        digest = content.image_hash(path.read_bytes(), (224, 224))
        groups.append(ContentGroup(digest, str(path), (Record(str(path), str(path), str(path), (), digest),)))
    return groups


def _decode_bundle(fn, batches: list[list]) -> list[list]:
    """Runs the `_DecodeImages` `fn` over `batches` as one bundle, as Beam does.

    Returns what it emitted for each batch and then at the bundle's end, its
    values unwrapped from the `WindowedValue`s of held-back batches (which
    must carry the batch's window and timestamp).
    """
    from apache_beam.pvalue import TaggedOutput
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    def unwrapped(output):
        if isinstance(output, TaggedOutput):
            return TaggedOutput(output.tag, unwrapped(output.value))
        if isinstance(output, WindowedValue):
            assert output.windows == (GlobalWindow(),) and output.timestamp == 7
            return output.value
        return output

    fn.setup()
    try:
        fn.start_bundle()
        emitted = [list(fn.process(batch, timestamp=7, window=GlobalWindow())) for batch in batches]
        emitted.append(list(fn.finish_bundle() or ()))
    finally:
        fn.teardown()
    return [[unwrapped(output) for output in batch] for batch in emitted]


def test_decode_images_runs_side_by_side_in_threads_and_keeps_order(tmp_path, monkeypatch):
    import threading
    import time

    from pipelines.embedding import content, preprocess

    groups = _groups(tmp_path, 8)
    for i, data in ((2, b"not an image"), (5, (tmp_path / "5.jpg").read_bytes()[:300])):  # bad files, keyed as they are
        (tmp_path / f"{i}.jpg").write_bytes(data)
        groups[i] = groups[i]._replace(content_hash=content.image_hash(data, (224, 224)))
    (tmp_path / "6.jpg").write_bytes((tmp_path / "0.jpg").read_bytes())  # replaced after it was keyed
    seen, decode = set(), preprocess.decode_pixels

    def spy(data, size, max_pixels):
        seen.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough that every pool thread takes one
        return decode(data, size, max_pixels)

    monkeypatch.setattr(preprocess, "decode_pixels", spy)
    emitted = _decode_bundle(preprocess._DecodeImages((224, 224), MAX_PIXELS, threads=3), [groups[:4], groups[4:]])
    assert len(seen) == 3 and all(name.startswith("hub-embed-decode") for name in seen)
    # One batch ahead: a batch comes out when the next one goes in, the last one when the bundle finishes.
    assert [len(e) for e in emitted] == [0, 4, 4]
    outputs = emitted[1] + emitted[2]
    reasons = {2: "UnidentifiedImageError", 5: "Truncated File Read", 6: "changed while the job ran"}
    assert len(outputs) == 8  # one output per row: decoded, or its dead letter, in input order
    for i, output in enumerate(outputs):
        if i in reasons:
            assert (
                output.tag == "failures" and output.value.stage == "decode" and output.value.id == groups[i].rows[0].id
            )
            assert reasons[i] in output.value.error
            continue
        with open(groups[i].payload, "rb") as f:
            expected = decode(f.read(), (224, 224), MAX_PIXELS)
        assert output.content_hash == groups[i].content_hash
        assert output.payload.dtype == np.uint8  # 8-bit pixels travel as bytes, scaled in the module call
        np.testing.assert_array_equal(output.payload, expected)


def test_decode_images_in_one_thread_gives_the_same_pixels(tmp_path):
    from pipelines.embedding import preprocess

    groups = _groups(tmp_path, 5)
    results = {}
    for threads in (1, 4):
        fn = preprocess._DecodeImages((224, 224), MAX_PIXELS, threads)
        emitted = _decode_bundle(fn, [groups[:2], groups[2:]])
        assert [len(e) for e in emitted] == ([2, 3, 0] if threads == 1 else [0, 2, 3])  # one thread: none held back
        results[threads] = [output for batch in emitted for output in batch]
    assert fn._pool is None
    assert len(results[1]) == len(results[4]) == 5
    for one, four in zip(results[1], results[4]):
        assert one.content_hash == four.content_hash
        np.testing.assert_array_equal(one.payload, four.payload)
