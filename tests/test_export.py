"""Tests of `pipelines.export` with real TensorFlow and tiny models of every source kind."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import http.server
import json
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from pipelines import export
from pipelines import inspect as inspect_cli
from pipelines.export import cli as export_cli
from pipelines.hub import binding, description, fingerprints, loading, registry
from pipelines.hub.module_manifest import read_module_manifest
from tests.fixtures import export_sources as es
from tests.fixtures import tiny_modules as tm

FEATURES = np.random.default_rng(1).random((5, es.FEATURES)).astype(np.float32)
TEXTS = ["the quick fox", "Brown dog", "fox fox the", "unknown words only"]


@dataclasses.dataclass(frozen=True)
class Case:
    """An exported source, a probe input for it, and its in-memory default output."""

    source: Any
    result: export.ExportResult
    probe: Any
    reference: Callable[[Any], np.ndarray]
    num_trainable: int


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("modules"))


@pytest.fixture(scope="module")
def keras_case(root) -> Case:
    model = es.keras3_model()
    return Case(
        model,
        export.export_module(model, root, "keras3"),
        FEATURES,
        lambda x: model(x)["default"].numpy(),
        len(model.trainable_variables),
    )


@pytest.fixture(scope="module")
def tf_keras_case(root) -> Case:
    model = es.tf_keras_model()
    return Case(
        model,
        export.export_module(model, root, "tf-keras"),
        FEATURES,
        lambda x: model(x).numpy(),
        len(model.trainable_variables),
    )


@pytest.fixture(scope="module")
def tf_module_case(root) -> Case:
    module = tm.ElmoLikeModule()
    result = export.export_module(
        module, root, "elmo", signatures={"default": module.embed_text, "tokens": module.embed_tokens}
    )
    return Case(module, result, tf.constant(TEXTS), lambda x: module.embed_text(x)["default"].numpy(), 2)


@pytest.fixture(scope="module")
def saved_model_case(root, tmp_path_factory) -> Case:
    path = tm.build_text_module(str(tmp_path_factory.mktemp("sources") / "text"))
    return Case(path, export.export_module(path, root, "text"), tf.constant(TEXTS), tm.text_module_reference, 2)


CASES = {
    "keras": "keras_case",
    "tf_keras": "tf_keras_case",
    "tf_module": "tf_module_case",
    "saved_model": "saved_model_case",
}


@pytest.fixture(params=sorted(CASES))
def case(request) -> Case:
    return request.getfixturevalue(CASES[request.param])


@pytest.fixture(scope="module")
def vocab_export(root, tmp_path_factory) -> tuple[es.VocabModule, export.ExportResult]:
    """A module using a vocabulary asset in-graph, exported (and packed); the source vocab file is then deleted."""
    vocab = es.write_vocab(str(tmp_path_factory.mktemp("vocab") / "vocab.txt"))
    module = es.VocabModule(vocab)
    result = export.export_module(
        module, root, "vocab", signatures={"default": module.__call__, "ids": module.ids}, pack=True
    )
    os.remove(vocab)
    return module, result


# --------------------------------------------------------------------------- round trips


def test_round_trip_reproduces_source(case):
    loaded = hub.load(case.result.path)
    expected = case.reference(case.probe)
    np.testing.assert_allclose(loaded(case.probe).numpy(), expected, atol=1e-5)
    input_name = case.result.manifest["signatures"]["default"]["inputs"][0]["name"]
    outputs = loaded.signatures["default"](**{input_name: tf.constant(case.probe)})
    np.testing.assert_allclose(outputs["default"].numpy(), expected, atol=1e-5)
    assert (case.result.version, os.path.basename(case.result.path)) == (1, "1")


def test_manifest_records_source_kind(keras_case, tf_keras_case, tf_module_case, saved_model_case, tiny, root):
    kinds = [c.result.manifest["source"]["kind"] for c in (keras_case, tf_keras_case, tf_module_case, saved_model_case)]
    tf1 = export.export_module(tiny.tf1, root, "tf1")  # a TF1 Hub module: migrated (tests/test_tf1_modules.py)
    assert kinds + [tf1.manifest["source"]["kind"]] == list(export.SOURCE_KINDS)
    assert saved_model_case.result.manifest["source"]["description"] == saved_model_case.source


def test_trainable_weights_through_keras_layer(case):
    layer = hub.KerasLayer(case.result.path, trainable=True)
    assert len(layer.trainable_weights) == case.num_trainable > 0
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(case.probe, training=True))
    assert all(g is not None for g in tape.gradient(loss, layer.trainable_weights))


def test_plain_tf_module_export_has_no_trainable_weights_but_its_reexport_does(root, tmp_path):
    plain = tm.build_plain_module(str(tmp_path / "plain"))
    layer = hub.KerasLayer(plain, signature="serving_default", output_key="default", trainable=True)
    assert layer.trainable_weights == []
    result = export.export_module(plain, root, "plain")
    assert len(hub.KerasLayer(result.path, trainable=True).trainable_weights) == 1
    assert description.describe(result.path).trainable


@pytest.mark.parametrize("fixture", ["keras_case", "tf_keras_case"])
def test_training_flag_reaches_dropout(request, fixture):
    case = request.getfixturevalue(fixture)
    loaded = hub.load(case.result.path)
    np.testing.assert_allclose(loaded(FEATURES, training=False).numpy(), case.reference(FEATURES), atol=1e-5)
    assert not np.allclose(loaded(FEATURES, training=True).numpy(), case.reference(FEATURES))
    layer = hub.KerasLayer(case.result.path, trainable=True)
    assert not np.allclose(layer(FEATURES, training=True).numpy(), layer(FEATURES, training=False).numpy())


def test_reusable_saved_model_source_keeps_training_argument(saved_model_case):
    """Re-exporting a reusable module delegates `__call__` to the source's own, `training` included."""
    loaded = hub.load(saved_model_case.result.path)
    expected = saved_model_case.reference(saved_model_case.probe)
    np.testing.assert_allclose(loaded(saved_model_case.probe, training=True).numpy(), expected, atol=1e-5)


def test_reexport_of_weights_trained_through_keras_layer(root, saved_model_case):
    """The fine-tuning path: train a loaded module's variables, export the loaded object as the next version."""
    parent = saved_model_case.result
    layer = hub.KerasLayer(parent.path, trainable=True)
    before = layer(saved_model_case.probe).numpy()
    for weight in layer.trainable_weights:
        weight.assign_add(tf.fill(tf.shape(weight), 0.5))
    tuned = layer(saved_model_case.probe).numpy()
    assert not np.allclose(tuned, before)
    result = export.export_module(layer.resolved_object, root, "text", parent=export.module_ref(parent.path))
    assert result.version == 2 and result.manifest["parent"]["fingerprint"] == parent.fingerprint
    assert sorted(hub.load(result.path).signatures) == ["default", "tokens"]
    np.testing.assert_allclose(hub.load(result.path)(saved_model_case.probe).numpy(), tuned, atol=1e-5)
    np.testing.assert_allclose(hub.load(parent.path)(saved_model_case.probe).numpy(), before, atol=1e-5)
    assert fingerprints.fingerprint_dir(parent.path) == parent.fingerprint


# --------------------------------------------------------------------------- signatures


def test_named_signatures_and_dict_outputs(tf_module_case, keras_case):
    module, loaded = tf_module_case.source, hub.load(tf_module_case.result.path)
    assert sorted(loaded.signatures) == ["default", "tokens"]
    tokens = tf.constant([["The", "fox", ""], ["brown", "", ""]])
    lengths = tf.constant([2, 1], tf.int32)
    got = loaded.signatures["tokens"](tokens=tokens, sequence_len=lengths)
    expected = module.embed_tokens(tokens, lengths)
    assert sorted(got) == ["default", "elmo"]
    for key in got:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-5)
    assert sorted(tf_module_case.result.manifest["signatures"]["tokens"]["outputs"][i]["name"] for i in (0, 1)) == [
        "default",
        "elmo",
    ]
    keras_outputs = hub.load(keras_case.result.path).signatures["default"](features=tf.constant(FEATURES))
    assert sorted(keras_outputs) == ["default", "hidden"]
    np.testing.assert_allclose(
        keras_outputs["hidden"].numpy(), keras_case.source(FEATURES)["hidden"].numpy(), atol=1e-5
    )


def test_explicit_signature_with_several_inputs(root):
    module = es.LinearModule()
    specs = {"x": tf.TensorSpec([None, es.FEATURES], tf.float32), "bias": tf.TensorSpec([None, 2], tf.float32)}
    signature = export.Signature(lambda inputs: module(inputs["x"])["default"] + inputs["bias"], specs)
    result = export.export_module(module, root, "two-inputs", signatures={"default": signature})
    loaded = hub.load(result.path)
    bias = np.ones((5, 2), np.float32)
    expected = FEATURES @ module.w.numpy() + bias
    np.testing.assert_allclose(loaded({"x": FEATURES, "bias": bias}).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(
        loaded.signatures["default"](x=FEATURES, bias=bias)["default"].numpy(), expected, atol=1e-5
    )


def _function_names(module_dir: str) -> list[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(module_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return [f.signature.name for g in saved.meta_graphs for f in g.graph_def.library.function]


def test_ragged_validations_are_kept_as_plain_asserts(root):
    """Ragged checks survive export as bare Assert ops: no AssertGuard functions, same error on bad input."""

    class RowSums(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64)])
        def __call__(self, values, row_splits):
            return {"default": tf.reduce_sum(tf.RaggedTensor.from_row_splits(values, row_splits), axis=1)}

    module = RowSums()
    specs = {"values": tf.TensorSpec([None], tf.float32), "row_splits": tf.TensorSpec([None], tf.int64)}
    signature = export.Signature(lambda inputs: module(inputs["values"], inputs["row_splits"]), specs)
    probe = {"values": tf.constant([1.0, 2.0, 3.0]), "row_splits": tf.constant([0, 2, 3], tf.int64)}
    result = export.export_module(
        module, root, "ragged-sums", signatures={"default": signature}, probe_inputs={"default": probe}
    )
    names = _function_names(result.path)
    assert names and not [n for n in names if "AssertGuard" in n]
    # The same code traced outside an export has them, so the check above can fail.
    guarded = RowSums()
    assert "AssertGuard" in str(guarded.__call__.get_concrete_function().graph.as_graph_def())

    serve = loading.load(result.path).signatures["default"]
    np.testing.assert_allclose(serve(**probe)["default"].numpy(), [3.0, 3.0])
    bad = {"values": tf.constant([1.0, 2.0, 3.0]), "row_splits": tf.constant([0, 2, 1], tf.int64)}
    for call in (lambda: serve(**bad), lambda: guarded(**bad)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="do not form a valid RaggedTensor:monotonic"):
            call()


# --------------------------------------------------------------------------- assets


def test_assets_are_saved_and_used_in_graph(vocab_export):
    module, result = vocab_export
    assert os.listdir(os.path.join(result.path, "assets")) == ["vocab.txt"]
    with open(os.path.join(result.path, "assets", "vocab.txt")) as f:
        assert f.read().split() == list(es.VOCAB)
    loaded = loading.load(result.path)  # the source vocabulary file is gone: the asset must be used
    ids = loaded.signatures["ids"](text=tf.constant(["the fox", "quick zebra brown"]))["ids"].numpy()
    np.testing.assert_array_equal(ids, [[0, 3, -1], [1, 4, 2]])
    np.testing.assert_allclose(loaded(tf.constant(TEXTS)).numpy(), module(tf.constant(TEXTS))["default"].numpy())


def test_packed_version_loads_over_http(vocab_export, tmp_path, monkeypatch):
    module, result = vocab_export
    assert result.tar_path == result.path + ".tar.gz" and os.path.isfile(result.tar_path)
    monkeypatch.setenv("HUB_EMBED_CACHE_DIR", str(tmp_path / "cache"))
    serve_root = os.path.dirname(os.path.dirname(result.path))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=serve_root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/vocab/{result.version}.tar.gz"
        resolved = registry.resolve(url)
    finally:
        server.shutdown()
        server.server_close()
    assert resolved.fingerprint == result.fingerprint
    assert resolved.path.startswith(str(tmp_path / "cache"))
    assert read_module_manifest(resolved.path) == result.manifest
    loaded = loading.load(resolved.path)
    np.testing.assert_allclose(loaded(tf.constant(TEXTS)).numpy(), module(tf.constant(TEXTS))["default"].numpy())


# --------------------------------------------------------------------------- verification and atomicity


def _entries(root: str, name: str) -> list[str]:
    return sorted(os.listdir(os.path.join(root, name)))


def test_verification_rejects_divergent_export_and_leaves_no_version(root):
    with pytest.raises(export.ExportVerificationError, match=r"max abs diff must be <= 1e-05.*default: 1"):
        export.export_module(es.divergent_keras_model(), root, "divergent")
    assert export.list_versions(root, "divergent") == []
    assert _entries(root, "divergent") == [".lock"]


def test_crash_leaves_no_version_and_next_export_cleans_debris(root, monkeypatch):
    module = es.LinearModule()

    def crash(path):
        raise RuntimeError("simulated crash while reloading")

    with monkeypatch.context() as patch:
        patch.setattr(loading, "load", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            export.export_module(module, root, "crashy")
    assert _entries(root, "crashy") == [".lock"]
    os.makedirs(os.path.join(root, "crashy", ".export-1-99999-deadbeef", "variables"))  # a killed exporter's debris
    assert export.export_module(module, root, "crashy").version == 1
    assert _entries(root, "crashy") == [".lock", "1"]


def test_versions_are_never_overwritten(root):
    module = es.LinearModule()
    first = export.export_module(module, root, "linear")
    second = export.export_module(module, root, "linear")
    assert (first.version, second.version) == (1, 2)
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_module(es.LinearModule(seed=5), root, "linear", version=2)
    assert fingerprints.fingerprint_dir(second.path) == second.fingerprint
    assert export.export_module(module, root, "linear", version=7).version == 7
    assert export.export_module(module, root, "linear").version == 8
    assert export.list_versions(root, "linear") == [1, 2, 7, 8]
    assert export.latest_version(root, "linear") == 8


def test_concurrent_exporters_get_distinct_versions(root):
    results, errors = [], []

    def run(seed: int) -> None:
        try:
            results.append(export.export_module(es.LinearModule(seed), root, "race"))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.version for r in results) == [1, 2]
    assert _entries(root, "race") == [".lock", "1", "2"]


# --------------------------------------------------------------------------- manifest


def test_manifest_contents(root, keras_case):
    parent = export.module_ref(keras_case.result.path)
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    extra = {
        "data": {"path": "s3://AKIAKEY:topsecret@bucket/train.jsonl?X-Amz-Signature=sig", "sha256": "ab"},
        "metrics": {"accuracy": 0.75},
    }
    result = export.export_module(
        keras_case.source, root, "keras3", parent=parent, extra_manifest=extra, source_description="fine-tuned keras3"
    )
    with open(os.path.join(result.path, "module.json")) as f:
        text = f.read()
    manifest = json.loads(text)
    assert manifest == result.manifest
    assert (manifest["name"], manifest["version"], manifest["format"]) == ("keras3", 2, "tf2")
    assert manifest["fingerprint"] == result.fingerprint == fingerprints.fingerprint_dir(result.path)
    info = description.describe(result.path)
    assert (info.name, info.version, info.reusable) == ("keras3", 2, True)
    assert manifest["signatures"] == {k: v.to_dict() for k, v in info.signatures.items()}
    assert manifest["signatures"]["default"]["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 4]}]
    assert manifest["num_trainable_variables"] == 4
    assert manifest["source"] == {"kind": "keras", "description": "fine-tuned keras3"}
    assert manifest["parent"] == {
        "name": "keras3",
        "version": 1,
        "fingerprint": keras_case.result.fingerprint,
        "handle": keras_case.result.path,
    }
    created = datetime.datetime.fromisoformat(manifest["created_at"])
    assert created.utcoffset() == datetime.timedelta(0) and before <= created
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert manifest["code_version"]["package"] == "hub-embed"
    assert manifest["code_version"]["version"] == "0.1.0"
    assert manifest["code_version"]["git_commit"] == head
    assert set(manifest["verification"]["max_abs_diff"]) == {"default", "__call__"}
    assert manifest["serving"] == {} and info.recommended_batch_size is None
    assert manifest["extra"]["metrics"] == {"accuracy": 0.75}
    assert manifest["extra"]["data"]["path"] == "s3://bucket/train.jsonl"
    assert "topsecret" not in text and "AKIAKEY" not in text and "sig" not in manifest["extra"]["data"]["path"]


# --------------------------------------------------------------------------- errors and CLI


class _NoCall(tf.Module):
    pass


@pytest.mark.parametrize(
    "make_source, kwargs, message",
    [
        (lambda tmp: 42, {}, "Cannot export a builtins.int"),
        (lambda tmp: str(tmp), {}, "is a directory but not a SavedModel"),
        (lambda tmp: str(tmp / "missing"), {}, "does not exist"),
        (lambda tmp: (tmp / "notes.txt").write_text("x") and str(tmp / "notes.txt"), {}, "not a .keras or .h5"),
        (lambda tmp: _NoCall(), {}, "has no tf.function __call__"),
        (lambda tmp: es.LinearModule(), {"signatures": {"main": es.LinearModule().__call__}}, "no 'default' signature"),
        (lambda tmp: es.LinearModule(), {"signatures": {"default": tf.function(lambda x: x)}}, "no input_signature"),
        (
            lambda tmp: es.LinearModule(),
            {
                "signatures": {
                    "default": export.Signature(lambda x: {"scores": x}, {"x": tf.TensorSpec([None], tf.float32)})
                }
            },
            "without a 'default' key",
        ),
        (lambda tmp: es.LinearModule(), {"version": 0}, "positive integer"),
        (lambda tmp: es.LinearModule(), {"probe_inputs": {"other": {}}}, "unknown signatures"),
    ],
)
def test_bad_sources_fail_clearly(tmp_path, make_source, kwargs, message):
    root = str(tmp_path / "root")
    with pytest.raises(export.ExportError, match=message):
        export.export_module(make_source(tmp_path), root, "bad", **kwargs)
    assert export.list_versions(root, "bad") == []


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "12", ".hidden"])
def test_bad_names_are_rejected(tmp_path, name):
    with pytest.raises(export.ExportError, match="Invalid module name"):
        export.export_module(es.LinearModule(), str(tmp_path), name)


@pytest.mark.parametrize("suffix, make_model", [(".keras", es.keras3_model), (".h5", es.tf_keras_model)])
def test_cli_exports_model_files(tmp_path, capsys, suffix, make_model):
    model = make_model()
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    root = str(tmp_path / "root")
    assert export_cli.main(["--source", path, "--root", root, "--name", "from-file", "--pack"]) == 0
    written, fingerprint = capsys.readouterr().out.splitlines()[0].split()
    assert written == export.version_dir(root, "from-file", 1)
    assert fingerprint == fingerprints.fingerprint_dir(written)
    assert os.path.isfile(written + ".tar.gz")
    outputs = binding.call_default(hub.load(written), FEATURES)
    expected = binding.as_output_dict(model(FEATURES))["default"]
    np.testing.assert_allclose(outputs.numpy(), expected.numpy(), atol=1e-5)


def test_a_recommended_batch_size_is_recorded_and_read_back(tmp_path):
    root = str(tmp_path)
    result = export.export_module(es.LinearModule(), root, "batched", batch_size=512)
    assert result.manifest["serving"] == {"batch_size": 512}
    info = description.describe(result.path)
    assert info.recommended_batch_size == 512 and info.to_dict()["recommended_batch_size"] == 512
    assert "batch size:   512 rows per call" in inspect_cli.render_text(info)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(export.ExportError, match="batch_size must be a positive integer"):
            export.export_module(es.LinearModule(), root, "batched", batch_size=bad)
    assert export.list_versions(root, "batched") == [1]
    assert export_cli.main(["--source", result.path, "--root", root, "--name", "again", "--batch-size", "64"]) == 0
    assert read_module_manifest(export.version_dir(root, "again", 1))["serving"] == {"batch_size": 64}


def test_cli_reports_bad_source(tmp_path, capsys):
    assert export_cli.main(["--source", str(tmp_path / "nope"), "--root", str(tmp_path), "--name", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
