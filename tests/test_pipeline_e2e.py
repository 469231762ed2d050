"""End to end: `python -m pipelines.embed` on the DirectRunner with real tiny modules (and MiniLM when built)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import embed
from pipelines.embedding import config, pipeline, sinks
from tests.fixtures import tiny_modules as tm

TEXTS = ["The cat sat on the mat.", "Dogs bark", "a", "Embeddings map text to vectors", "cat mat sat"]
MINILM = config.DEFAULT_MODULE


def run(*args: str, output=None) -> int:
    """Runs the command line in-process; returns its exit status."""
    return embed.main([*args] + (["--output", str(output)] if output else []))


def table_by_id(output) -> dict[str, dict]:
    table = sinks.read_table(str(output))
    rows = table.to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "duplicate ids"
    return {r["id"]: r for r in rows}


def errors_by_source(output) -> dict[str, dict]:
    return {r["source"]: r for r in sinks.read_errors(str(output)).to_pylist()}


@pytest.fixture
def src(tmp_path):
    """A txt input with the TEXTS, one per line."""
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def per_line(path, vectors) -> dict[str, np.ndarray]:
    """Expected rows of a txt input: id `<file>:<line>` -> vector."""
    return {f"{path}:{i + 1}": vector for i, vector in enumerate(vectors)}


def assert_embeddings(rows: dict[str, dict], expected: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    assert sorted(rows) == sorted(expected)
    for key, vector in expected.items():
        np.testing.assert_allclose(np.asarray(rows[key]["embedding"], np.float32), vector, atol=atol)


# --------------------------------------------------------------------------- tiny modules written here


class FussyModule(tf.Module):
    """`default(text) -> [N, 3]`; NaN rows for texts containing "nan"; refuses calls with a text over 40 chars."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, text):
        lengths = tf.strings.length(text)
        tf.debugging.assert_less(tf.reduce_max(lengths), 40, message="input longer than 40 characters")
        length = tf.cast(lengths, tf.float32)
        vectors = tf.stack([length, 2.0 * length, tf.ones_like(length)], axis=1)
        poisoned = tf.strings.regex_full_match(text, ".*nan.*")[:, None]
        return {"default": tf.where(poisoned, tf.fill(tf.shape(vectors), np.float32("nan")), vectors)}


class MaskedTokensModule(tf.Module):
    """`tokens(text) -> token_embeddings [N, T, 4] (zero padded) + token_mask [N, T] int32`, MiniLM-shaped."""

    def __init__(self):
        super().__init__()
        self.table = tf.Variable(np.random.default_rng(5).normal(size=(tm.TEXT_BUCKETS, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokens(self, text):
        words = tf.strings.split(text)
        dense = words.to_tensor("")
        mask = tf.sequence_mask(words.row_lengths(), tf.shape(dense)[1], dtype=tf.int32)
        vectors = tf.gather(self.table, tf.strings.to_hash_bucket_fast(dense, tm.TEXT_BUCKETS))
        return {"token_embeddings": vectors * tf.cast(mask, tf.float32)[:, :, None], "token_mask": mask}


class ShiftyModule(tf.Module):
    """`default(text) -> [N, D]` whose D grows from 4 to 5 for calls of more than 2 rows."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, text):
        n = tf.shape(text)[0]
        return {"default": tf.zeros([n, tf.where(n > 2, 5, 4)])}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-modules")
    paths = {}
    for name, module, signatures in [
        ("fussy", FussyModule(), lambda m: {"default": m.serve}),
        ("masked", MaskedTokensModule(), lambda m: {"tokens": m.tokens}),
        ("shifty", ShiftyModule(), lambda m: {"default": m.serve}),
    ]:
        paths[name] = str(root / name)
        tf.saved_model.save(module, paths[name], signatures=signatures(module))
    paths["masked_table"] = MaskedTokensModule().table.numpy()
    return paths


# --------------------------------------------------------------------------- inputs


def write_inputs(root, fmt: str) -> str:
    """The TEXTS in `fmt` with ids "d0".. and a "lang" passthrough column; returns the input glob."""
    ids = [f"d{i}" for i in range(len(TEXTS))]
    langs = ["en"] * len(TEXTS)
    path = os.path.join(root, f"docs.{fmt}")
    if fmt == "jsonl":
        with open(path, "w") as f:
            f.writelines(json.dumps({"id": i, "text": t, "lang": g}) + "\n" for i, t, g in zip(ids, TEXTS, langs))
    elif fmt == "csv":
        pa.csv.write_csv(pa.table({"id": ids, "text": TEXTS, "lang": langs}), path)
    elif fmt == "parquet":
        pq.write_table(pa.table({"id": ids, "text": TEXTS, "lang": langs}), path)
    elif fmt == "tfrecord":
        with tf.io.TFRecordWriter(path) as writer:
            for values in zip(ids, TEXTS, langs):
                feature = {
                    k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                    for k, v in zip(("id", "text", "lang"), values)
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def test_txt_with_the_default_signature(tiny, tmp_path, src):
    assert run("--input", str(src), "--module", tiny.text, output=tmp_path / "out") == 0
    expected = tm.text_module_reference(TEXTS)
    assert_embeddings(table_by_id(tmp_path / "out"), per_line(src, expected))
    manifest = sinks.read_table_manifest(str(tmp_path / "out"))
    assert manifest["counts"]["rows_in"] == manifest["counts"]["rows_embedded"] == len(TEXTS)
    table = manifest["table"]
    assert (table["dimension"], table["signature"], table["output_key"], table["sequence"]) == (
        8,
        "default",
        "default",
        False,
    )
    assert table["fingerprint"].startswith("sha256:") and table["config_hash"].startswith("sha256:")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "tfrecord"])
def test_each_record_format_with_ids_and_passthrough(tiny, tmp_path, fmt):
    src = write_inputs(tmp_path, fmt)
    out = tmp_path / "out"
    assert run("--input", src, "--module", tiny.text, "--id-field", "id", "--passthrough", "lang", output=out) == 0
    expected = tm.text_module_reference(TEXTS)
    rows = table_by_id(out)
    assert_embeddings(rows, {f"d{i}": expected[i] for i in range(len(TEXTS))})
    assert {r["lang"] for r in rows.values()} == {"en"}
    schema = pq.read_schema(out / sinks.read_table_manifest(str(out))["files"][0]["path"])
    assert schema.names == ["id", "embedding", "content_hash", "lang"]
    assert schema.field("embedding").type == pa.list_(pa.float32(), 8)
    # The content key: SHA-256 of the text's UTF-8 bytes, named in the metadata.
    assert {r["content_hash"] for r in rows.values()} == {hashlib.sha256(t.encode()).hexdigest() for t in TEXTS}
    assert json.loads(schema.metadata[b"hub_embed"])["content_hash"]["function"] == "sha256"


def test_tf1_hub_format_module(tiny, tmp_path, src):
    assert run("--input", str(src), "--module", tiny.tf1, output=tmp_path / "out") == 0
    expected = tm.tf1_module_reference(TEXTS)
    assert_embeddings(table_by_id(tmp_path / "out"), per_line(src, expected))
    assert sinks.read_table_manifest(str(tmp_path / "out"))["table"]["module_format"] == "tf1_hub"


def test_sequence_output_of_an_elmo_style_tokens_signature(tiny, tmp_path, src):
    out = tmp_path / "out"
    assert (
        run("--input", str(src), "--module", tiny.text, "--signature", "tokens", "--output-key", "elmo", output=out)
        == 0
    )
    rows = table_by_id(out)
    reference = tm.ElmoLikeModule(8, 0)
    for i, text in enumerate(TEXTS):
        words = text.split()
        expected = reference._vectors(tf.strings.lower(tf.constant(words))).numpy()
        np.testing.assert_allclose(np.asarray(rows[f"{src}:{i + 1}"]["embedding"]), expected, atol=1e-5)
    part = out / sinks.read_table_manifest(str(out))["files"][0]["path"]
    assert pq.read_schema(part).field("embedding").type == pa.list_(pa.list_(pa.float32(), 8))


def test_sequence_output_is_trimmed_with_the_mask_output(own, tmp_path, src):
    out = tmp_path / "out"
    args = ("--input", str(src), "--module", own["masked"], "--signature", "tokens", "--output-key", "token_embeddings")
    assert run(*args, output=out) == 0
    rows = table_by_id(out)
    for i, text in enumerate(TEXTS):
        ids = tf.strings.to_hash_bucket_fast(tf.constant(text.split()), tm.TEXT_BUCKETS).numpy()
        np.testing.assert_allclose(np.asarray(rows[f"{src}:{i + 1}"]["embedding"]), own["masked_table"][ids], atol=1e-6)


def _image(path, mode: str, color, size=(12, 9), fmt=None) -> None:
    Image.new(mode, size, color).save(path, format=fmt)


def test_images_any_mode_and_the_bad_ones(tiny, tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    _image(src / "red.png", "RGB", (255, 0, 0))
    _image(src / "gray.png", "L", 51)
    _image(src / "clear.png", "RGBA", (0, 0, 0, 0))
    _image(src / "magenta-cmyk.jpg", "CMYK", (0, 255, 0, 0), fmt="JPEG")
    _image(src / "really-a-png.jpg", "RGB", (0, 0, 255), fmt="PNG")
    _image(src / "huge.png", "RGB", (0, 255, 0), size=(400, 300))
    _image(src / "truncated.jpg", "RGB", (9, 9, 9), size=(64, 64), fmt="JPEG")
    data = (src / "truncated.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    args = ("--input", str(src / "*"), "--input-format", "image", "--module", tiny.image, "--max-image-pixels", "10000")
    assert run(*args, "--max-error-fraction", "0.5", output=out) == 0

    loaded = tf.saved_model.load(tiny.image)

    def expected(rgb):
        pixels = np.full((1, 8, 8, 3), np.asarray(rgb, np.float32) / 255, np.float32)
        return loaded.signatures["default"](images=tf.constant(pixels))["default"].numpy()[0]

    assert_embeddings(
        table_by_id(out),
        {
            str(src / "red.png"): expected((255, 0, 0)),
            str(src / "gray.png"): expected((51, 51, 51)),
            str(src / "clear.png"): expected((255, 255, 255)),  # transparency over white
            str(src / "magenta-cmyk.jpg"): expected((255, 0, 255)),
            str(src / "really-a-png.jpg"): expected((0, 0, 255)),
        },
        atol=3 / 255,
    )
    errors = errors_by_source(out)
    assert sorted(errors) == sorted(str(src / n) for n in ("huge.png", "truncated.jpg", "empty.png"))
    assert {e["stage"] for e in errors.values()} == {"decode"}
    assert "400x300 = 120000 pixels, over max_image_pixels=10000" in errors[str(src / "huge.png")]["error"]
    assert "truncated" in errors[str(src / "truncated.jpg")]["error"].lower()
    assert "UnidentifiedImageError" in errors[str(src / "empty.png")]["error"]


def test_image_calls_side_by_side_and_decode_threads_change_nothing_in_the_table(tiny, tmp_path):
    """1 thread: `Decode` decodes, calls in turn; 4: four calls side by side, each thread decoding its own images."""
    src = tmp_path / "images"
    src.mkdir()
    for i in range(9):
        _image(src / f"{i}.png", "RGB", (28 * i, 255 - 28 * i, 90), size=(12 + i, 10))
    (src / "empty.png").write_bytes(b"")
    tables, errors = [], []
    for threads in ("1", "4"):
        out = tmp_path / f"out-{threads}"
        args = ("--input", str(src / "*"), "--input-format", "image", "--module", tiny.image, "--batch-size", "4")
        assert run(*args, "--decode-threads", threads, "--max-error-fraction", "0.5", output=out) == 0
        tables.append(table_by_id(out))
        errors.append(errors_by_source(out))
    assert len(tables[0]) == 9 and sorted(tables[0]) == sorted(tables[1])
    for key, row in tables[0].items():
        np.testing.assert_array_equal(row["embedding"], tables[1][key]["embedding"])
    assert list(errors[0]) == list(errors[1]) == [str(src / "empty.png")]


def test_decode_threads_are_the_configs_else_the_worker_processs_share_of_the_cores():
    from apache_beam.options.pipeline_options import PipelineOptions

    cores = os.cpu_count() or 1
    cfg = config.load(["--input", "x.jpg", "--output", "o"])
    assert pipeline.decode_threads(cfg, PipelineOptions([])) == cores
    mp = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert pipeline.decode_threads(cfg, mp) == max(1, cores // 2)
    assert pipeline.decode_threads(cfg, PipelineOptions(["--runner=DataflowRunner"])) == 1
    assert pipeline.decode_threads(config.load(["--input", "x.jpg", "--output", "o", "--decode-threads", "3"]), mp) == 3


def test_image_calls_run_side_by_side_in_one_process_only(tiny):
    from apache_beam.options.pipeline_options import PipelineOptions

    cores = os.cpu_count() or 1
    image = config.load(["--input", "x.jpg", "--output", "o", "--module", tiny.image])
    one = PipelineOptions([])
    assert pipeline.side_by_side_calls(image, one) == cores  # the decode threads' default
    three = config.load(["--input", "x.jpg", "--output", "o", "--module", tiny.image, "--decode-threads", "3"])
    assert pipeline.side_by_side_calls(three, one) == 3
    text = config.load(["--input", "x.txt", "--output", "o", "--module", tiny.text, "--decode-threads", "3"])
    assert pipeline.side_by_side_calls(text, one) == 1  # texts: calls in turn
    mp = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert pipeline.side_by_side_calls(three, mp) == 1  # each process already has its share of the cores
    assert pipeline.side_by_side_calls(three, PipelineOptions(["--runner=DataflowRunner"])) == 1


def test_a_launcher_that_loads_the_module_sets_tensorflows_threads_as_its_side_by_side_calls_need(tiny):
    # A fresh process and an empty module cache (the autouse fixture's, inherited): prepare must load
    # the module to describe it, which starts TensorFlow; the in-process workers then reuse that copy,
    # and TensorFlow's pools cannot change any more.
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        from pipelines.embedding import config, loaded_modules, pipeline
        cfg = config.load(["--input", "x.jpg", "--output", "o", "--module", {tiny.image!r}, "--decode-threads", "3"])
        pipeline.prepare(cfg)
        assert loaded_modules._LOADED, "prepare did not load the module: the description was cached"
        print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
        """
    )
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="2", TF_NUM_INTEROP_THREADS="1")  # what it must override
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "3"]  # one intra-op thread per call, one inter-op thread per call


def test_image_module_with_open_size_takes_image_size(tiny, tmp_path):
    src = tmp_path / "a.png"
    _image(src, "RGB", (0, 255, 0))
    out = tmp_path / "out"
    assert run("--input", str(src), "--module", tiny.image_open, "--image-size", "5,7", output=out) == 0
    assert len(table_by_id(out)) == 1 and sinks.read_table_manifest(str(out))["table"]["dimension"] == 4


def test_dead_letters_counts_and_the_error_budget(own, tmp_path, capsys):
    src = tmp_path / "in.txt"
    lines = [b"short", b"nan in here", b"x" * 50, b"   ", b"bad \xff byte", b"also fine"] + [
        b"ok %d" % i for i in range(4)
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    args = ("--input", str(src), "--module", own["fussy"], "--batch-size", "4")
    assert run(*args, output=tmp_path / "strict") == 1
    assert "4 of 10 records failed (40.00%), more than max_error_fraction=0.01" in capsys.readouterr().err
    assert sinks.read_table_manifest(str(tmp_path / "strict")) is None

    out = tmp_path / "lenient"
    assert run(*args, "--max-error-fraction", "0.5", output=out) == 0
    rows = table_by_id(out)
    assert sorted(rows) == sorted(f"{src}:{n}" for n in (1, 6, 7, 8, 9, 10))
    np.testing.assert_allclose(rows[f"{src}:1"]["embedding"], [5, 10, 1])
    errors = errors_by_source(out)
    assert {k.rsplit(":", 1)[1]: e["stage"] for k, e in errors.items()} == {
        "2": "embed",
        "3": "embed",
        "4": "validate",
        "5": "read",
    }
    assert errors[f"{src}:2"]["error"] == "embedding has NaN or inf values"
    assert "input longer than 40 characters" in errors[f"{src}:3"]["error"]
    counts = sinks.read_table_manifest(str(out))["counts"]
    assert (counts["rows_in"], counts["rows_embedded"], counts["rows_failed"]) == (10, 6, 4)
    assert counts["failed_by_stage"] == {"embed": 2, "read": 1, "validate": 1}


def test_an_output_dimension_that_changes_fails_the_run(own, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\nc\n")
    assert run("--input", str(src), "--module", own["shifty"], "--batch-size", "3", output=tmp_path / "out") == 1
    assert "has shape [3, 5], expected [3, 4]" in capsys.readouterr().err
    assert sinks.read_table_manifest(str(tmp_path / "out")) is None


def test_config_and_module_errors_exit_2_before_running(tiny, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    assert run("--input", str(src), "--module", tiny.text, "--output-key", "pooled", output=tmp_path / "o") == 2
    assert (
        "Output key 'pooled' not found in signature 'default'; valid output keys: 'default'" in capsys.readouterr().err
    )
    assert run("--input", str(src), "--module", str(tmp_path / "nope"), output=tmp_path / "o") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_commit_refuses_to_clobber_overwrites_on_request_and_recovers_from_a_killed_run(tiny, tmp_path, src, capsys):
    out = tmp_path / "out"
    # A killed earlier run: its temp dir and parts it had moved, but no _SUCCESS.
    (out / ".tmp-20260101T000000Z-dead").mkdir(parents=True)
    (out / ".tmp-20260101T000000Z-dead" / "part-x.parquet").write_bytes(b"half")
    (out / "part-00000-20260101T000000Z-dead.parquet").write_bytes(b"half")
    args = ("--input", str(src), "--module", tiny.text)
    assert run(*args, output=out) == 0
    first = sinks.read_table_manifest(str(out))
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_report.html", first["files"][0]["path"]]
    assert len(table_by_id(out)) == len(TEXTS)

    assert run(*args, output=out) == 2
    assert "already holds a table" in capsys.readouterr().err
    assert run(*args, "--overwrite", output=out) == 0
    second = sinks.read_table_manifest(str(out))
    assert second["run_id"] != first["run_id"]
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_report.html", second["files"][0]["path"]]
    assert len(table_by_id(out)) == len(TEXTS)


def test_dataflow_dry_run_builds_the_expected_job_graph(tiny):
    from apache_beam.options.pipeline_options import PipelineOptions

    cfg = config.load(
        [
            "--config",
            os.path.join(os.path.dirname(__file__), "..", "configs", "docs-jsonl-dataflow.yaml"),
            "--module",
            tiny.text,
            "--dry_run=True",
            "--project",
            "test-project",
            "--temp_location",
            "gs://test-bucket/tmp",
        ]
    )
    # Staging the package (setup_file) needs `python -m build`; the job graph does not.
    p = pipeline.new_pipeline(PipelineOptions([a for a in cfg.beam_args if not a.startswith("--setup_file")]))
    pipeline.build_pipeline(p, cfg)
    result = p.run()
    transforms = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    for step in (
        "Read/Match",
        "Read/Parse",
        "DedupeIds/Group",
        "Preprocess",
        "ReadReuse/Read",
        "JoinContent/Join",
        "JoinContent/Resolve",
        "Decode",
        "Embed/RunInference",
        "Embed/Split",
        "AllFailures",
        "AllTallies",
        "WriteTable/WriteParts",
        "WriteTable/WriteParts1",
        "WriteTable/WriteErrorParts",
        "WriteTable/Commit",
    ):
        assert step in transforms, step


@pytest.mark.slow
def test_in_process_and_multi_process_runs_give_identical_tables(tiny, tmp_path):
    args = ("--module", tiny.text, "--batch-size", "16")  # the bundled sample: 400 real sentences
    assert run(*args, output=tmp_path / "one") == 0
    assert run(*args, "--direct_num_workers=2", "--direct_running_mode=multi_processing", output=tmp_path / "two") == 0
    one, two = table_by_id(tmp_path / "one"), table_by_id(tmp_path / "two")
    assert len(one) == 400 and sorted(one) == sorted(two)
    for key in one:
        np.testing.assert_allclose(one[key]["embedding"], two[key]["embedding"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(MINILM), reason="the default module is built by `make setup`")
def test_minilm_on_the_bundled_sample_equals_the_module(tmp_path):
    from pipelines.hub import binding, loading
    from pipelines.hub.module_manifest import read_module_manifest

    assert read_module_manifest(MINILM)["serving"] == {"batch_size": 1024}  # it sorts and chunks each call itself
    out = tmp_path / "sample"
    assert run(output=out) == 0
    assert sinks.read_table_manifest(str(out))["counts"]["rows_embedded"] == 400
    rows = table_by_id(out)
    with open(config.SAMPLE_INPUT) as f:
        texts = f.read().splitlines()
    assert len(rows) == len(texts) == 400
    direct = binding.bind(loading.load(MINILM))({"text": tf.constant(texts)})
    for i, text in enumerate(texts):
        got = np.asarray(rows[f"{config.SAMPLE_INPUT}:{i + 1}"]["embedding"])
        cosine = got @ direct[i] / (np.linalg.norm(got) * np.linalg.norm(direct[i]))
        assert cosine >= 0.9999, (text, cosine)
    shutil.rmtree(out)
