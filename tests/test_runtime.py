"""`pipelines.embedding.runtime`: TensorFlow's thread pools and heap trimming."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a process of its own: 4,000 blocks of 64 KiB (below glibc's mmap threshold, so heap
# pages), one in 16 kept alive so that the freed ones are holes glibc does not hand back.
FRAGMENTED_HEAP = textwrap.dedent(
    """
    import numpy as np, psutil
    from pipelines.embedding.runtime import release_free_memory
    process = psutil.Process()
    blocks = [np.ones(8192) for _ in range(4000)]
    kept = blocks[::16]
    del blocks
    before = process.memory_info().rss
    released = release_free_memory()
    print(released, (before - process.memory_info().rss) // 2**20, len(kept))
    """
)


def test_release_free_memory_hands_freed_heap_pages_back():
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, timeout=120, check=True
    )
    released, freed_mb, kept = done.stdout.split()
    assert released == "True" and kept == "250"
    assert int(freed_mb) > 150  # of the ≈234 MiB of holes


def test_heap_is_trimmed_at_most_once_per_interval(monkeypatch):
    from pipelines.embedding import runtime

    calls = []
    monkeypatch.setattr(runtime, "release_free_memory", lambda: calls.append(1) or True)
    trimmer = runtime.HeapTrimmer(interval_s=2.0)
    done = [trimmer.maybe_release(now) for now in (100.0, 100.5, 101.9, 102.0, 102.1, 110.0)]
    assert done == [True, False, False, True, False, True] and len(calls) == 3


def test_tensorflow_runs_calls_side_by_side_on_one_intra_op_thread_each():
    script = textwrap.dedent(
        """
        import tensorflow as tf
        from pipelines.embedding.runtime import configure_threads
        configure_threads(None, 3)
        print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
        tf.constant(1.0) + 1  # TensorFlow has started: its pools are kept, and nothing raises
        configure_threads(2)
        print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["1", "3", "1", "3"]
