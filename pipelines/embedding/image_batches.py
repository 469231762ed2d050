"""A module call's images as one float32 tensor, stacked into a buffer each thread reuses."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.embedding.preprocess import unit_scale

_BATCH_BUFFERS = threading.local()


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """`np.stack(images)` into a buffer this thread reuses from call to call.

    `tf.constant` copies its input anyway, so the same memory serves every
    call (see docs/design/embedding.md). The result is only valid until this
    thread's next call.
    """
    shape = (len(images), *images[0].shape)
    buffer = getattr(_BATCH_BUFFERS, "array", None)
    if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0] or buffer.dtype != images[0].dtype:
        buffer = _BATCH_BUFFERS.array = np.empty(shape, images[0].dtype)
    return np.stack(images, out=buffer[: shape[0]])


def image_batch(images: Sequence[np.ndarray]) -> Any:
    """The float32 `[N, H, W, 3]` tensor in [0, 1] of a call's images (`preprocess.decode_pixels` arrays).

    When every image is uint8, the bytes are stacked and divided by 255 in
    TensorFlow, for the whole call at once and on its threads: the same
    float32 values as `preprocess.unit_scale` (one correctly rounded
    division each), with a quarter of the memory stacked and copied.
    Otherwise each image is scaled on its own first.
    """
    import tensorflow as tf  # TensorFlow: heavy, imported when the first call's inputs are built

    if all(image.dtype == np.uint8 for image in images):
        return tf.math.divide(tf.cast(tf.constant(stack_images(images)), tf.float32), tf.constant(255.0))
    return tf.constant(stack_images([unit_scale(image) for image in images]))
