"""`pipelines.embedding.image_batches`: a call's images stacked into one tensor."""

from __future__ import annotations


def test_images_are_stacked_into_one_buffer_per_thread():
    import threading

    import numpy as np

    from pipelines.embedding.image_batches import stack_images

    rng = np.random.default_rng(0)
    images = [rng.random((6, 5, 3), dtype=np.float32) for _ in range(4)]
    first = stack_images(images)
    np.testing.assert_array_equal(first, np.stack(images))
    again = stack_images(images[::-1][:3])  # a smaller call (a halved batch) reuses the same memory
    assert np.shares_memory(first, again)
    np.testing.assert_array_equal(again, np.stack(images[::-1][:3]))
    larger = stack_images(images * 2)  # more rows, or another shape or dtype: a new buffer
    assert not np.shares_memory(larger, again) and larger.shape == (8, 6, 5, 3)
    other = stack_images([image.astype(np.float64)[:, :4] for image in images])
    assert other.dtype == np.float64 and other.shape == (4, 6, 4, 3)
    np.testing.assert_array_equal(other, np.stack([image.astype(np.float64)[:, :4] for image in images]))
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(stack_images(images)))
    thread.start()
    thread.join()
    assert not np.shares_memory(elsewhere[0], stack_images(images))  # each thread has its own


def test_image_batch_scales_bytes_in_tensorflow_exactly_as_unit_scale():
    import numpy as np

    from pipelines.embedding.image_batches import image_batch
    from pipelines.embedding.preprocess import unit_scale

    rng = np.random.default_rng(0)
    every_value = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    images = [every_value] + [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)]  # 7: an odd count
    batch = image_batch(images).numpy()
    expected = np.stack([unit_scale(image) for image in images])
    assert batch.dtype == np.float32 and batch.shape == (7, 16, 16, 3)
    np.testing.assert_array_equal(batch.view(np.uint32), expected.view(np.uint32))  # bit for bit
    gray = rng.random((16, 16, 3), dtype=np.float32)  # a 16-bit grayscale image's pixels, already in [0, 1]
    mixed = image_batch([images[1], gray, images[2]]).numpy()
    np.testing.assert_array_equal(mixed, np.stack([expected[1], gray, expected[2]]))
