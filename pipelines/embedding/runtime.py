"""A worker process's runtime: TensorFlow's thread pools, and handing the C heap's free pages back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Callable

# The least time between two heap trims (see `HeapTrimmer`).
TRIM_INTERVAL_S = 2.0


def configure_threads(threads: int | None, calls: int = 1) -> None:
    """Sets this process's TensorFlow pools for the module's calls, before TensorFlow starts.

    Nothing when TensorFlow has already started here: its pools are then
    fixed. (A launcher that must load the module to describe it sets them
    first, as its in-process workers would: `pipeline.prepare`.)

    Args:
      threads: intra-op threads per call (inter-op: at most 2); None leaves TensorFlow's defaults.
      calls: calls side by side (> 1: one intra-op thread each, `calls` inter-op threads).
    """
    if calls > 1:
        intra, inter = 1, calls
    elif threads:
        intra, inter = threads, min(threads, 2)
    else:
        return
    import tensorflow as tf  # TensorFlow only when pools are set: a launcher that loads no module never imports it

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already started in this process (in-process runner): keep its pools.
        pass


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HeapTrimmer:
    """Calls `release_free_memory` when asked, at most once every `interval_s` seconds."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S):
        self._interval_s = interval_s
        self._last: float | None = None

    def maybe_release(self, now: float | None = None) -> bool:
        """Releases the heap's free pages unless that was done less than `interval_s` ago; True when it did."""
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last < self._interval_s:
            return False
        self._last = now
        release_free_memory()
        return True
