"""`pipelines.embedding.model_handler`: what the end-to-end tests do not show directly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a process of its own: 4,000 blocks of 64 KiB (below glibc's mmap threshold, so heap
# pages), one in 16 kept alive so that the freed ones are holes glibc does not hand back.
FRAGMENTED_HEAP = textwrap.dedent(
    """
    import numpy as np, psutil
    from pipelines.embedding.model_handler import release_free_memory
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
    from pipelines.embedding import model_handler

    calls = []
    monkeypatch.setattr(model_handler, "release_free_memory", lambda: calls.append(1) or True)
    trimmer = model_handler.HeapTrimmer(interval_s=2.0)
    done = [trimmer.maybe_release(now) for now in (100.0, 100.5, 101.9, 102.0, 102.1, 110.0)]
    assert done == [True, False, False, True, False, True] and len(calls) == 3


def test_images_are_stacked_into_one_buffer_per_thread():
    import threading

    import numpy as np

    from pipelines.embedding.model_handler import stack_images

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

    from pipelines.embedding.model_handler import image_batch
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


# --------------------------------------------------------------------------- image calls side by side


def _image_groups(directory, tiny_image, count: int, broken: tuple[int, ...] = ()):
    """`count` distinct PNGs (those in `broken` not images) as `ContentGroup`s keyed as the pipeline keys them
    (payload: the path), the module's description and its spec with calls of 3."""
    from PIL import Image

    from pipelines.embedding import config, content
    from pipelines.embedding.records import ContentGroup, Record
    from pipelines.hub import modules

    groups = []
    for i in range(count):
        path = str(directory / f"{i}.png")
        Image.new("RGB", (9 + i % 5, 7), (19 * i % 256, 255 - 7 * i % 256, 40)).save(path)
        if i in broken:
            with open(path, "wb") as f:
                f.write(b"not an image %d" % i)
        with open(path, "rb") as f:
            key = content.image_hash(f.read(), (8, 8))
        groups.append(ContentGroup(key, path, (Record(path, None, path, (), key),)))
    cfg = config.load(
        [
            "--input",
            str(directory / "*.png"),
            "--output",
            str(directory / "out"),
            "--module",
            tiny_image,
            "--batch-size",
            "3",
        ]
    )
    info = modules.describe(tiny_image)
    return groups, info, config.model_spec(cfg, info)


def test_a_window_of_calls_side_by_side_holds_about_the_same_images_per_thread_whatever_the_call_size():
    from pipelines.embedding import model_handler

    rows = model_handler.WINDOW_ROWS_PER_THREAD
    assert [model_handler.calls_per_thread(size) * size for size in (8, 32)] == [rows, rows]
    assert model_handler.calls_per_thread(3) == rows // 3
    assert model_handler.calls_per_thread(rows * 2) == 1  # a call larger than the window is still one call


def test_image_calls_side_by_side_decode_in_their_threads_and_embed_as_calls_in_turn(tiny, tmp_path, monkeypatch):
    import threading

    from pipelines.embedding import model_handler, preprocess

    groups, info, spec = _image_groups(tmp_path, tiny.image, 11, broken=(4,))  # 4 calls of 3, the last one of 2
    with open(tmp_path / "7.png", "ab") as f:
        f.write(b"appended")  # changed since it was keyed
    side_by_side = model_handler.HubModelHandler(tiny.image, "default", info.fingerprint, spec, None, calls=2)
    in_turn = model_handler.HubModelHandler(tiny.image, "default", info.fingerprint, spec, None)
    assert side_by_side.batch_elements_kwargs()["max_batch_size"] == 3 * 2 * model_handler.calls_per_thread(3)
    assert in_turn.batch_elements_kwargs()["max_batch_size"] == 3

    decoders = set()
    decode_content = preprocess.decode_content

    def spying(*args):
        decoders.add(threading.current_thread().name)
        return decode_content(*args)

    monkeypatch.setattr(model_handler, "decode_content", spying)
    results = list(side_by_side.run_inference(groups, side_by_side.load_model()))
    assert [r.example for r in results] == groups  # in order
    assert decoders and all(name.startswith("hub-embed-call") for name in decoders)
    failures = {i: r.inference for i, r in enumerate(results) if isinstance(r.inference, model_handler.DecodeFailure)}
    assert sorted(failures) == [4, 7]
    assert "UnidentifiedImageError" in failures[4].error and "changed while the job ran" in failures[7].error

    # The same rows decoded beforehand and called one call after another: the same vectors, bit for bit.
    good = [i for i in range(11) if i not in failures]
    decoded = [groups[i]._replace(payload=decode_content(groups[i], (8, 8), 10**6)) for i in good]
    expected = [r.inference for r in in_turn.run_inference(decoded, in_turn.load_model())]
    for i, vector in zip(good, expected):
        assert results[i].inference.tobytes() == vector.tobytes()


def test_side_by_side_failures_are_dead_lettered_at_stage_decode(tiny, tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.embedding import model_handler
    from pipelines.embedding.records import FAILURES

    groups, info, spec = _image_groups(tmp_path, tiny.image, 4, broken=(2,))
    handler = model_handler.HubModelHandler(tiny.image, "default", info.fingerprint, spec, None, calls=2)
    with beam.Pipeline() as p:
        out = p | beam.Create(groups) | model_handler.Embed(handler)
        stages = out[FAILURES] | beam.Map(lambda f: (f.source, f.stage))
        assert_that(stages, equal_to([(str(tmp_path / "2.png"), "decode")]), label="failures")
        ids = out.records | beam.Map(lambda r: r.id)
        assert_that(ids, equal_to([str(tmp_path / f"{i}.png") for i in (0, 1, 3)]), label="records")


def test_tensorflow_runs_calls_side_by_side_on_one_intra_op_thread_each():
    script = textwrap.dedent(
        """
        import tensorflow as tf
        from pipelines.embedding.model_handler import configure_threads
        configure_threads(None, 3)
        print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
        tf.constant(1.0) + 1  # TensorFlow has started: its pools are kept, and nothing raises
        configure_threads(2)
        print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["1", "3", "1", "3"]
