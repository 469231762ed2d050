"""`pipelines.embedding.model_handler`: what the end-to-end tests do not show directly."""

from __future__ import annotations


def _image_groups(directory, tiny_image, count: int, broken: tuple[int, ...] = ()):
    """`count` distinct PNGs (those in `broken` not images) as `ContentGroup`s keyed as the pipeline keys them
    (payload: the path), the module's description and its spec with calls of 3."""
    from PIL import Image

    from pipelines.embedding import config, content, model_spec
    from pipelines.embedding.records import ContentGroup, Record
    from pipelines.hub import description

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
    info = description.describe(tiny_image)
    return groups, info, model_spec.for_module(cfg, info)


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
