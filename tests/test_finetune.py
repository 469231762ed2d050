"""Fine-tune -> re-export with real TensorFlow: the digits image encoder, text modules, bad data, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from examples import digits
from pipelines import export, finetune
from pipelines.finetune import cli, labeled, trainable, training
from pipelines.finetune import run as finetune_run
from pipelines.hub import description, fingerprints
from pipelines.hub.module_manifest import MANIFEST_NAME, read_module_manifest
from pipelines.models import build_minilm
from tests.fixtures import finetune_data as fd
from tests.fixtures import tiny_modules as tm

DIGITS_HPARAMS = finetune.Hyperparameters(epochs=5, seed=0)


@dataclasses.dataclass(frozen=True)
class Tuned:
    """A parent version, the data it was fine-tuned on, and the fine-tuned result."""

    parent: export.ExportResult
    data: str
    result: finetune.FinetuneResult


def test_the_bundled_digits_are_the_uci_test_set_scikit_learn_ships():
    """`examples/data/digits.csv.gz`, unchanged from scikit-learn 1.9.1 (its SHA-256 in `digits.md`)."""
    import hashlib

    with open(digits.DIGITS_CSV, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(os.path.dirname(digits.DIGITS_CSV), "digits.md")) as f:
        assert digest in f.read()
    images, labels = digits.load_digits()
    assert images.shape == (1797, 8, 8) and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert images.min() == 0 and images.max() == 16 and np.array_equal(images, np.round(images))
    files, png_labels = digits.digits_png()
    assert len(files) == 1797 and files[0].startswith(b"\x89PNG") and np.array_equal(png_labels, labels)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("modules"))


@pytest.fixture(scope="module")
def digits_v1(root, tmp_path_factory) -> tuple[export.ExportResult, str]:
    return digits.build(root, str(tmp_path_factory.mktemp("digits") / "data"))


@pytest.fixture(scope="module")
def digits_v2(root, digits_v1) -> Tuned:
    parent, data = digits_v1
    return Tuned(parent, data, finetune.finetune(parent.path, data, root, hparams=DIGITS_HPARAMS))


@pytest.fixture(scope="module")
def raw_text_module(tmp_path_factory) -> str:
    """The ELMo-like module as written by hand: no manifest, `__call__` returns a dict."""
    return tm.build_text_module(str(tmp_path_factory.mktemp("raw") / "text"))


@pytest.fixture(scope="module")
def text_v2(root, tmp_path_factory) -> Tuned:
    """The ELMo-like module exported as `elmo` v1 (two signatures), fine-tuned on stdlib docstrings."""
    module = tm.ElmoLikeModule()
    parent = export.export_module(
        module, root, "elmo", signatures={"default": module.embed_text, "tokens": module.embed_tokens}
    )
    data = fd.docstrings_jsonl(str(tmp_path_factory.mktemp("text") / "docstrings.jsonl"), per_label=30)
    hparams = finetune.Hyperparameters(epochs=10, learning_rate=1e-2, seed=0)
    return Tuned(parent, data, finetune.finetune(parent.path, data, root, hparams=hparams))


@pytest.fixture(params=["digits_v2", "text_v2"])
def tuned(request) -> Tuned:
    return request.getfixturevalue(request.param)


def _probe_inputs(tuned: Tuned) -> np.ndarray:
    data = labeled.read(tuned.data, tuned.result.export.manifest["extra"]["finetune"]["data"]["kind"], (32, 32))
    return data.inputs[:16]


# --------------------------------------------------------------------------- the exported version


def test_new_version_has_trained_weights_and_reproduces_the_in_memory_encoder(tuned):
    published = tuned.result.export
    assert published.version == tuned.parent.version + 1
    name_dir = os.path.dirname(tuned.parent.path)
    assert published.path == export.version_dir(
        os.path.dirname(name_dir), os.path.basename(name_dir), published.version
    )
    parent, child = hub.load(tuned.parent.path), hub.load(published.path)
    changed = [not np.array_equal(p.numpy(), c.numpy()) for p, c in zip(parent.variables, child.variables)]
    assert any(changed)
    inputs = tf.constant(_probe_inputs(tuned))
    expected = tuned.result.encoder(inputs)
    np.testing.assert_allclose(child(inputs).numpy(), expected.numpy(), atol=1e-5)
    assert not np.allclose(parent(inputs).numpy(), expected.numpy(), atol=1e-3)


def test_new_version_keeps_the_parents_signatures(tuned):
    manifest, parent_manifest = tuned.result.export.manifest, tuned.parent.manifest
    assert manifest["signatures"] == parent_manifest["signatures"]
    assert sorted(hub.load(tuned.result.export.path).signatures) == sorted(parent_manifest["signatures"])
    assert description.describe(tuned.result.export.path).trainable


def test_parent_is_untouched_and_linked_from_the_manifest(tuned):
    assert fingerprints.fingerprint_dir(tuned.parent.path) == tuned.parent.fingerprint
    manifest = tuned.result.export.manifest
    assert manifest["parent"] == {
        "name": tuned.parent.manifest["name"],
        "version": tuned.parent.version,
        "fingerprint": tuned.parent.fingerprint,
        "handle": tuned.parent.path,
    }
    record = manifest["extra"]["finetune"]
    kind = record["data"]["kind"]
    data = labeled.read(tuned.data, kind, (32, 32))
    assert record["data"] == {
        "path": os.path.abspath(tuned.data),
        "kind": kind,
        "content_hash": data.content_hash,
        "examples": len(data),
        "classes": list(data.classes),
    }
    assert record["task"] == "classification"
    assert record["hyperparameters"]["seed"] == 0 and record["hyperparameters"]["batch_size"] == 32
    assert record["metrics"] == json.loads(json.dumps(tuned.result.metrics))
    assert set(record["metrics"]) == {"train", "holdout", "probe", "training"}


def test_digits_v2_embeddings_beat_the_parents_under_the_same_head(digits_v2, capsys):
    """Held-out accuracy of a ridge head fitted on train-split embeddings of the reloaded parent and v2."""
    data = labeled.read(digits_v2.data, "image", digits.IMAGE_SIZE)
    train, holdout = labeled.split(data, DIGITS_HPARAMS.holdout_fraction, DIGITS_HPARAMS.seed)
    accuracy = {}
    for version, path in (("parent", digits_v2.parent.path), ("v2", digits_v2.result.export.path)):
        module = hub.load(path)
        train_x, holdout_x = (module(tf.constant(data.inputs[i])).numpy() for i in (train, holdout))
        accuracy[version] = training.probe_accuracy(train_x, data.labels[train], holdout_x, data.labels[holdout], 10)
    with capsys.disabled():
        print(f"\ndigits held-out accuracy, ridge head: parent {accuracy['parent']:.4f} -> v2 {accuracy['v2']:.4f}")
    assert accuracy["v2"] > accuracy["parent"]
    probe = digits_v2.result.metrics["probe"]
    assert probe["parent_holdout_accuracy"] == pytest.approx(accuracy["parent"], abs=0.01)
    assert probe["finetuned_holdout_accuracy"] == pytest.approx(accuracy["v2"], abs=0.01)
    assert digits_v2.result.metrics["holdout"]["accuracy"] > 0.8


def test_same_seed_gives_the_same_module(digits_v1, tmp_path):
    parent, data = digits_v1
    hparams = finetune.Hyperparameters(steps=4, seed=7)
    runs = [finetune.finetune(parent.path, data, str(tmp_path / f"run{i}"), hparams=hparams) for i in range(2)]
    assert [run.export.version for run in runs] == [2, 2]  # the parent's version + 1, also in a new root
    assert runs[0].metrics["holdout"] == runs[1].metrics["holdout"]
    first, second = (hub.load(run.export.path).variables for run in runs)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, second))


def test_a_higher_version_in_the_output_root_is_never_overwritten(root, digits_v2):
    """Fine-tuning v1 again while v2 exists publishes v3."""
    hparams = finetune.Hyperparameters(steps=1)
    result = finetune.finetune(digits_v2.parent.path, digits_v2.data, root, hparams=hparams)
    assert result.export.version == 3 and result.export.manifest["parent"]["version"] == 1
    assert fingerprints.fingerprint_dir(digits_v2.result.export.path) == digits_v2.result.export.fingerprint


class DropoutImageModule(tf.Module):
    """Channel means -> dropout (training only) -> linear map.

    The dropout's random op has seed = seed2 = 0, as in a module traced without
    a global seed (most published ones); a raw op, since this process may have
    set a global seed already.
    """

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32))

    def embed(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        features = tf.reduce_mean(images, axis=[1, 2])
        if training:
            keep = tf.raw_ops.RandomUniform(shape=tf.shape(features), dtype=tf.float32) >= 0.5
            features = tf.where(keep, features * 2.0, 0.0)
        return features @ self.w


def test_module_with_unseeded_dropout_is_fine_tuned_in_inference_mode(digits_v2, tmp_path):
    module = DropoutImageModule()
    spec = {"images": tf.TensorSpec([None, 8, 8, 3], tf.float32)}
    signatures = {"default": export.Signature(module.embed, spec)}
    parent = export.export_module(module, str(tmp_path), "noisy", signatures=signatures)
    assert trainable.unseeded_random_ops(parent.path)
    data = fd.image_folder(str(tmp_path / "images"), per_label=3)
    result = finetune.finetune(parent.path, data, str(tmp_path), hparams=finetune.Hyperparameters(steps=2))
    assert result.metrics["training"]["module_training_mode"] is False
    assert trainable.unseeded_random_ops(digits_v2.parent.path) == []
    assert digits_v2.result.metrics["training"]["module_training_mode"] is True


# --------------------------------------------------------------------------- the Lambda failure mode


def test_lambda_wrapped_module_neither_trains_nor_saves_but_keras_layer_path_does(digits_v2, tmp_path):
    """The source document's failure: a hub module inside a Keras `Lambda` layer is invisible to Keras."""
    loaded = hub.load(digits_v2.parent.path)
    parent_weights = [v.numpy() for v in loaded.trainable_variables]
    images = tf_keras.Input((*digits.IMAGE_SIZE, 3))
    head = tf_keras.layers.Dense(10)
    model = tf_keras.Model(images, head(tf_keras.layers.Lambda(lambda x: loaded(x))(images)))
    assert len(model.trainable_weights) == 2  # the head's kernel and bias only
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = labeled.read(digits_v2.data, "image", digits.IMAGE_SIZE)
    model.fit(data.inputs[:64], data.labels[:64], epochs=1, verbose=0)
    assert all(np.array_equal(w, v.numpy()) for w, v in zip(parent_weights, loaded.trainable_variables))
    saved = str(tmp_path / "lambda.weights.h5")
    model.save_weights(saved)
    with h5py.File(saved) as f:
        arrays = []
        f["layers"].visititems(lambda name, item: arrays.append(name) if isinstance(item, h5py.Dataset) else None)
    assert sorted(arrays) == ["dense/vars/0", "dense/vars/1"]  # the module's weights are not saved

    # Our path: hub.KerasLayer(trainable=True) trains the module's variables, and the export carries them.
    tuned = digits_v2.result.encoder.trainable_variables
    reloaded = hub.load(digits_v2.result.export.path).trainable_variables
    assert any(not np.array_equal(w, v.numpy()) for w, v in zip(parent_weights, tuned))
    assert all(np.array_equal(t.numpy(), r.numpy()) for t, r in zip(tuned, reloaded))


# --------------------------------------------------------------------------- text modules


def test_module_without_manifest_with_dict_outputs_and_no_holdout(raw_text_module, tmp_path):
    data = fd.docstrings_jsonl(str(tmp_path / "docs.jsonl"), per_label=5, packages=("email", "logging"))
    with pytest.raises(finetune.FinetuneError, match="has no name in a module.json"):
        finetune.finetune(raw_text_module, data, str(tmp_path / "out"))
    hparams = finetune.Hyperparameters(steps=2, learning_rate=0.1, holdout_fraction=0)
    result = finetune.finetune(raw_text_module, data, str(tmp_path / "out"), name="tiny-text", hparams=hparams)
    assert result.export.version == 1 and result.export.manifest["parent"]["version"] is None
    assert result.metrics["train"]["examples"] == 10
    assert result.metrics["holdout"] is None and result.metrics["probe"] is None
    assert sorted(hub.load(result.export.path).signatures) == ["default", "tokens"]


def test_non_trainable_module_is_refused(tmp_path):
    plain = tm.build_plain_module(str(tmp_path / "plain"))
    data = tmp_path / "data.jsonl"
    data.write_text(fd.jsonl_text(*fd.small_text_rows()))
    with pytest.raises(finetune.FinetuneError, match="not a reusable module with trainable variables"):
        finetune.finetune(plain, str(data), str(tmp_path / "out"), name="plain")


def _minilm_parent(tmp_path) -> str:
    """The default module as `make setup` builds it, else built here from the installed weights."""
    if os.path.isfile(os.path.join(build_minilm.DEFAULT_HANDLE, MANIFEST_NAME)):
        return build_minilm.DEFAULT_HANDLE
    try:
        return build_minilm.build(str(tmp_path / "minilm-root"))
    except FileNotFoundError as e:
        pytest.skip(f"all-MiniLM-L6-v2 weights not installed: {e}")


@pytest.mark.slow
def test_minilm_fine_tune_reexports_both_signatures(tmp_path):
    parent = _minilm_parent(tmp_path)
    parent_fingerprint = fingerprints.fingerprint_dir(parent)
    data = fd.docstrings_jsonl(str(tmp_path / "docs.jsonl"), per_label=6)
    hparams = finetune.Hyperparameters(steps=3, batch_size=8, learning_rate=1e-4)
    result = finetune.finetune(parent, data, str(tmp_path / "out"), hparams=hparams)
    assert result.export.version == 2 and result.export.manifest["parent"]["fingerprint"] == parent_fingerprint
    assert fingerprints.fingerprint_dir(parent) == parent_fingerprint
    assert result.export.manifest["signatures"] == read_module_manifest(parent)["signatures"]
    assert result.metrics["training"]["module_training_mode"] is True  # build_minilm seeds its dropout ops

    texts = tf.constant(fd.TEXTS)
    child, original = hub.load(result.export.path), hub.load(parent)
    tuned = result.encoder(texts).numpy()
    np.testing.assert_allclose(child(texts).numpy(), tuned, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(original(texts).numpy(), tuned, atol=1e-4)
    expected_tokens = result.encoder.signatures["tokens"](text=texts)
    for key, value in child.signatures["tokens"](text=texts).items():
        np.testing.assert_allclose(value.numpy(), expected_tokens[key].numpy(), atol=1e-5)


# --------------------------------------------------------------------------- bad data


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(finetune_run, "train", fail)


@pytest.mark.parametrize("case", sorted(fd.BAD_TEXT))
def test_bad_text_data_fails_before_training(case, raw_text_module, tmp_path, no_training):
    file_name, content, message = fd.BAD_TEXT[case]
    path = tmp_path / file_name
    path.write_text(content)
    with pytest.raises(labeled.DataError) as raised:
        finetune.finetune(raw_text_module, str(path), str(tmp_path / "out"), name="tiny-text")
    assert f"{path}{message}" in str(raised.value)
    assert export.list_versions(str(tmp_path / "out"), "tiny-text") == []


def _unreadable_in_folder(folder: str) -> tuple[str, str]:
    fd.image_folder(folder)
    bad = os.path.join(folder, "b", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG not really")
    return folder, f"{bad}: unreadable image"


def _missing_in_list(folder: str) -> tuple[str, str]:
    fd.image_folder(folder)
    listing = os.path.join(folder, "images.jsonl")
    with open(listing, "w") as f:
        f.write(fd.jsonl_text({"path": "a/0.png", "label": "a"}, {"path": "a/gone.png", "label": "a"}))
    return listing, f"{os.path.join(folder, 'a', 'gone.png')} (listed at {listing}:2): unreadable image"


def _loose_file(folder: str) -> tuple[str, str]:
    fd.image_folder(folder)
    loose = fd.write_png(os.path.join(folder, "loose.png"))
    return folder, f"{loose}: images must be in one sub-folder per label"


def _one_label(folder: str) -> tuple[str, str]:
    return fd.image_folder(folder, labels=("a",)), f"{folder}: every example has the label 'a'"


@pytest.mark.parametrize("make", [_unreadable_in_folder, _missing_in_list, _loose_file, _one_label])
def test_bad_image_data_fails_before_training(make, digits_v1, tmp_path, no_training):
    data, message = make(str(tmp_path / "images"))
    with pytest.raises(labeled.DataError) as raised:
        finetune.finetune(digits_v1[0].path, data, str(tmp_path / "out"))
    assert message in str(raised.value)
    assert export.list_versions(str(tmp_path / "out"), digits.NAME) == []


def test_image_list_reads_like_a_folder(tmp_path):
    folder = fd.image_folder(str(tmp_path / "images"))
    listing = tmp_path / "list.jsonl"
    rows = [{"path": f"images/{label}/{i}.png", "label": label} for label in "ab" for i in range(2)]
    listing.write_text(fd.jsonl_text(*rows))
    from_folder = labeled.read(folder, "image", (4, 4))
    from_list = labeled.read(str(listing), "image", (4, 4))
    np.testing.assert_array_equal(from_folder.inputs, from_list.inputs)
    np.testing.assert_array_equal(from_folder.labels, from_list.labels)
    assert from_folder.classes == from_list.classes == ("a", "b")
    assert from_folder.content_hash != from_list.content_hash  # the list file is part of the data


def test_content_hash_follows_the_bytes(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(fd.jsonl_text(*fd.small_text_rows()))
    first = labeled.read(str(path), "text").content_hash
    copy = tmp_path / "copy.jsonl"
    shutil.copy(path, copy)
    assert labeled.read(str(copy), "text").content_hash != first  # the file name is hashed too
    assert labeled.read(str(path), "text").content_hash == first
    path.write_text(fd.jsonl_text(*fd.small_text_rows(("a", "c"))))
    assert labeled.read(str(path), "text").content_hash != first


def test_bad_hyperparameters_are_refused():
    with pytest.raises(finetune.FinetuneError, match="not both"):
        finetune.Hyperparameters(epochs=1, steps=1).resolve("text")
    with pytest.raises(finetune.FinetuneError, match="batch_size must be positive"):
        finetune.Hyperparameters(batch_size=0).resolve("image")
    assert finetune.Hyperparameters().resolve("text").learning_rate == training.DEFAULT_LEARNING_RATES["text"]


# --------------------------------------------------------------------------- CLI


def test_cli_prints_metrics_and_a_json_summary(raw_text_module, tmp_path, capsys):
    data = fd.docstrings_jsonl(str(tmp_path / "docs.jsonl"), per_label=5, packages=("email", "xml"))
    out = str(tmp_path / "out")
    argv = [
        "--module",
        raw_text_module,
        "--data",
        data,
        "--task",
        "classification",
        "--output-root",
        out,
        "--name",
        "tiny-text",
        "--steps",
        "2",
        "--learning-rate",
        "0.05",
        "--seed",
        "3",
    ]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["path"] == export.version_dir(out, "tiny-text", 1)
    assert summary["fingerprint"] == fingerprints.fingerprint_dir(summary["path"])
    assert summary["metrics"]["training"]["steps"] == 2
    assert any(line.startswith("holdout: ") for line in lines)
    assert any(line.startswith("probe (same ridge head") for line in lines)


def test_cli_reports_bad_data(raw_text_module, tmp_path, capsys):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    argv = ["--module", raw_text_module, "--data", str(data), "--output-root", str(tmp_path), "--name", "x"]
    assert cli.main(argv) == 2
    assert f"error: {data}: no examples" in capsys.readouterr().err
