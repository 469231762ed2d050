"""Reduced-precision module versions (`pipelines.export.precision`, `export --precision`): real tiny models, real exports."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from examples import digits
from pipelines import export, finetune
from pipelines import inspect as inspect_cli
from pipelines.export import cli as export_cli
from pipelines.export import comparison, precision, probes
from pipelines.hub import description, fingerprints
from pipelines.hub.module_manifest import read_module_manifest
from tests.fixtures import export_sources as es
from tests.fixtures import tiny_modules as tm

FEATURES = np.random.default_rng(3).random((64, es.FEATURES)).astype(np.float32)


def _heavy_op_dtypes(path: str) -> dict[str, list[int]]:
    """Heavy op type -> the dtype (`T`, or `Ta` for V3) of each such op in the SavedModel's functions."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    found: dict[str, list[int]] = {}
    for function in saved.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op in precision.HEAVY_OPS:
                found.setdefault(node.op, []).append(node.attr[precision.HEAVY_OPS[node.op][0]].type)
    return found


class TwoLayerModule(tf.Module):
    """x [N, 4] -> dense(16) + GELU -> dense(8), plus a float score and an int argmax output."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w1 = tf.Variable(rng.normal(size=(es.FEATURES, 16)).astype(np.float32))
        self.b1 = tf.Variable(rng.normal(size=(16,)).astype(np.float32))
        self.w2 = tf.Variable(rng.normal(size=(16, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, es.FEATURES], tf.float32)])
    def __call__(self, x):
        hidden = tf.nn.gelu(tf.nn.bias_add(tf.matmul(x, self.w1), self.b1), approximate=False)
        out = tf.matmul(hidden, self.w2) + x[:, :1]  # the residual-style add stays float32
        return {"default": out, "argmax": tf.argmax(out, axis=1), "score": tf.reduce_sum(out, axis=1)}


# --------------------------------------------------------------------------- the rewrite


def test_cosine_stats_compares_vectors_and_skips_all_zero_ones():
    a = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [3.0, 4.0]]])
    b = np.array([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [3.0, 4.0]]])
    stats = comparison.cosine_stats(a, b)
    assert stats["vectors"] == 3  # the padded all-zero position is left out
    assert stats["min"] == pytest.approx(np.sqrt(0.5))
    assert stats["mean"] == pytest.approx((np.sqrt(0.5) + 2) / 3)
    assert comparison.cosine_stats([[1.0, 0.0]], [[0.0, 0.0]])["min"] == 0.0  # zero against non-zero
    assert comparison.cosine_stats([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == {
        "min": pytest.approx(1.0),
        "mean": pytest.approx(1.0),
        "vectors": 1,
    }
    assert comparison.cosine_stats(np.zeros((0, 4)), np.zeros((0, 4)))["vectors"] == 0
    assert comparison.cosine_stats(np.ones((2, 3)), np.ones((3, 2)))["min"] == float("-inf")


def test_bfloat16_export_computes_matmuls_in_bfloat16_with_the_same_interface(tmp_path):
    module = TwoLayerModule()
    root = str(tmp_path)
    reference = export.export_module(module, root, "two-layer")
    # Its argmax of 8 random scores flips on a near-tie or two, depending on the CPU's bfloat16 kernels
    # (measured: 0 of 64 rows on AVX512-BF16, 2 of 64 on AMD Zen 2, where bfloat16 rounded both scores to 4.3669).
    result = export.export_module(
        module,
        root,
        "two-layer-bf16",
        precision="bfloat16",
        probe_inputs={"default": {"x": FEATURES}},
        min_agreement=0.9,
    )

    assert _heavy_op_dtypes(reference.path) == {"MatMul": [types_pb2.DT_FLOAT] * 4}  # default + __call__ x 2 traces
    assert _heavy_op_dtypes(result.path) == {"MatMul": [types_pb2.DT_BFLOAT16] * 4}
    manifest = result.manifest
    assert manifest["precision"]["compute"] == "bfloat16"
    assert manifest["precision"]["converted"] == {"MatMul": 4} and manifest["precision"]["already_bfloat16"] == 0
    assert manifest["precision"]["elementwise_bfloat16"] > 0  # BiasAdd and GELU joined the first matmul
    assert reference.manifest["precision"] == {"compute": "float32"}
    assert manifest["signatures"] == reference.manifest["signatures"]  # same inputs, outputs, dtypes

    verification = manifest["verification"]
    assert verification["metric"] == "cosine" and verification["min_cosine_required"] == 0.999
    assert verification["reference"] == "the float32 source, in memory"
    assert verification["probe"]["default"]["rows"] == 64
    assert 0.999 <= verification["min_cosine"] <= verification["mean_cosine"] < 1.0
    assert verification["cosine"]["default"]["vectors"] == 64 + 1  # 64 rows of `default` and the [N] score
    assert verification["min_agreement_required"] == 0.9 and list(verification["agreement"]) == ["default/argmax"]
    assert 0.9 <= verification["agreement"]["default/argmax"] <= 1.0
    loaded = hub.load(result.path)
    out = loaded.signatures["default"](x=tf.constant(FEATURES))
    expected = module(tf.constant(FEATURES))
    assert out["default"].dtype == tf.float32
    got, want = out["default"].numpy(), expected["default"].numpy()
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    cosine = (got64 * want64).sum(1) / np.linalg.norm(got64, axis=1) / np.linalg.norm(want64, axis=1)
    assert verification["cosine"]["default"]["min"] <= cosine.min() + 1e-9  # the recorded min covers every output
    # Really computed differently, and close for 3 significant digits through two layers (measured: max abs
    # 0.198 on outputs up to 16.2 on AMD Zen 2, whose bfloat16 is emulated; under 0.1 on AVX512-BF16).
    assert 0 < np.abs(got - want).max() < 0.03 * np.abs(want).max()
    np.testing.assert_array_equal(loaded(tf.constant(FEATURES)).numpy(), got)

    info = description.describe(result.path)
    assert info.precision == "bfloat16" and description.describe(reference.path).precision == "float32"
    text = inspect_cli.render_text(info)
    assert "precision:    bfloat16 (matmuls and convolutions; outputs float32; min cosine 0.99" in text
    assert "precision:    float32" in inspect_cli.render_text(description.describe(reference.path))


def test_bfloat16_version_of_a_keras_saved_model_and_its_reexport(tmp_path):
    root = str(tmp_path)
    source = export.export_module(es.keras3_model(), root, "keras3")
    bf16 = export.export_module(source.path, root, "keras3-bf16", precision="bfloat16")
    assert bf16.manifest["precision"]["converted"] == {"MatMul": 4}  # 2 layers x (default, training __call__)
    assert bf16.manifest["source"]["kind"] == "saved_model"
    # Trainable: float32 weights, bfloat16 compute; gradients flow through the casts.
    layer = hub.KerasLayer(bf16.path, trainable=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(FEATURES, training=False))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert len(grads) == 4 and all(g is not None and g.dtype == tf.float32 for g in grads)

    again = export.export_module(bf16.path, root, "keras3-bf16", precision="bfloat16")
    assert again.manifest["precision"]["converted"] == {} and again.manifest["precision"]["already_bfloat16"] == 4
    assert again.manifest["verification"]["min_cosine"] == pytest.approx(1.0)  # against the bfloat16 source
    assert again.manifest["verification"]["reference"] == "the bfloat16 source, in memory"
    with pytest.raises(export.ExportError, match="computes 4 matmul/convolution ops in bfloat16 already"):
        export.export_module(bf16.path, root, "mislabelled")
    assert export.list_versions(root, "mislabelled") == []


def test_missed_parity_fails_the_export_and_leaves_nothing(tmp_path):
    root = str(tmp_path)
    with pytest.raises(
        export.ExportVerificationError, match=r"min cosine per vector must be >= 1.*default: min cosine 0\.99"
    ):
        export.export_module(
            TwoLayerModule(),
            root,
            "strict",
            precision="bfloat16",
            min_cosine=1.0,
            probe_inputs={"default": {"x": FEATURES}},
        )
    assert export.list_versions(root, "strict") == []
    assert sorted(os.listdir(os.path.join(root, "strict"))) == [".lock"]


class TiedScoresModule(tf.Module):
    """x [N, 4] >= 0 -> two scores whose weights differ by 2^-12 relative: bfloat16 rounds them to one weight."""

    def __init__(self):
        super().__init__()
        column = np.array([1.125, 1.5, 1.25, 1.75], dtype=np.float32)  # exact in bfloat16
        self.w = tf.Variable(np.stack([column, column * (1 + 2.0**-12)], axis=1))

    @tf.function(input_signature=[tf.TensorSpec([None, es.FEATURES], tf.float32)])
    def __call__(self, x):
        scores = tf.matmul(x, self.w)
        return {"default": scores, "argmax": tf.argmax(scores, axis=1)}


def test_an_argmax_that_bfloat16_ties_fails_the_export_unless_a_share_of_agreement_is_accepted(tmp_path, capsys):
    """float32 always picks the second score; bfloat16 computes two equal scores and picks the first."""
    root, probe = str(tmp_path), {"default": {"x": FEATURES}}
    with pytest.raises(
        export.ExportVerificationError,
        match=r"default/argmax: 0 of 64 elements equal .*--min-agreement, or min_agreement=, accepts a share",
    ):
        export.export_module(TiedScoresModule(), root, "tied", precision="bfloat16", probe_inputs=probe)
    assert export.list_versions(root, "tied") == []

    result = export.export_module(
        TiedScoresModule(), root, "tied", precision="bfloat16", probe_inputs=probe, min_agreement=0.0
    )
    verification = result.manifest["verification"]
    assert verification["agreement"] == {"default/argmax": 0.0} and verification["min_agreement_required"] == 0.0
    assert verification["min_cosine"] > 0.9999  # the scores themselves are as close as bfloat16 gets
    # Float outputs only (no inf from the argmax): scores below 5.7, where two bfloat16 steps are 1/16.
    assert 0 < verification["max_abs_diff"]["default"] < 1 / 16
    out = hub.load(result.path).signatures["default"](x=tf.constant(FEATURES))
    np.testing.assert_array_equal(out["argmax"].numpy(), 0)

    source = str(tmp_path / "tied-f32")
    tf.saved_model.save(TiedScoresModule(), source)
    argv = ["--source", source, "--root", root, "--name", "tied-cli", "--precision", "bfloat16"]
    assert export_cli.main(argv) == 2
    assert "default/argmax: 0 of" in capsys.readouterr().err
    assert export_cli.main([*argv, "--min-agreement", "0"]) == 0
    for bad in (-0.1, 1.5, True, "1"):
        with pytest.raises(export.ExportError, match=r"min_agreement must be a number in \[0, 1\]"):
            export.export_module(TiedScoresModule(), root, "tied", precision="bfloat16", min_agreement=bad)


def test_nothing_to_convert_and_bad_precision_are_refused(tmp_path, capsys):
    root = str(tmp_path)
    text = tm.build_text_module(str(tmp_path / "text"))  # embedding lookups and means: no matmul
    with pytest.raises(export.ExportError, match="no float32 .*MatMul.* op to run in bfloat16"):
        export.export_module(text, root, "text", precision="bfloat16")
    with pytest.raises(export.ExportError, match=r"Unknown precision 'float16'; choose one of float32, bfloat16"):
        export.export_module(es.LinearModule(), root, "linear", precision="float16")
    for bad in (0, 1.5, -1, True, "0.99"):
        with pytest.raises(export.ExportError, match=r"min_cosine must be a number in \(0, 1\]"):
            export.export_module(es.LinearModule(), root, "linear", precision="bfloat16", min_cosine=bad)
    assert export.list_versions(root, "text") == [] and not os.path.exists(os.path.join(root, "linear"))
    source = export.export_module(es.LinearModule(), root, "linear").path
    assert export_cli.main(["--source", source, "--root", root, "--name", "x", "--precision", "int4"]) == 2
    assert "Unknown precision 'int4'" in capsys.readouterr().err
    assert export_cli.main(["--source", source, "--root", root, "--name", "x", "--precision", "bfloat16"]) == 0
    written, fingerprint = capsys.readouterr().out.split()
    assert read_module_manifest(written)["precision"]["compute"] == "bfloat16"
    assert fingerprint == fingerprints.fingerprint_dir(written)
    with open(os.path.join(written, "module.json")) as f:
        assert json.load(f)["verification"]["probe"]["default"]["rows"] == probes.PROBE_SIZE


def test_image_module_convolutions_in_bfloat16_and_fine_tuning_keeps_the_precision(tmp_path):
    root = str(tmp_path)
    parent, data = digits.build(root, str(tmp_path / "data"), epochs=1, finetune_limit=6)
    bf16 = export.export_module(
        parent.path,
        root,
        "digits-bf16",
        precision="bfloat16",
        probe_inputs={"default": {"images": np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)}},
    )
    assert set(bf16.manifest["precision"]["converted"]) == {"Conv2D", "MatMul"}
    tuned = finetune.finetune(bf16.path, data, root, hparams=finetune.Hyperparameters(steps=2, batch_size=8, seed=0))
    manifest = tuned.export.manifest
    assert manifest["precision"]["compute"] == "bfloat16" and manifest["precision"]["converted"] == {}
    assert manifest["parent"]["name"] == "digits-bf16" and manifest["parent"]["fingerprint"] == bf16.fingerprint
    assert manifest["verification"]["metric"] == "cosine"
    assert not np.allclose(hub.load(tuned.export.path).variables[0].numpy(), hub.load(bf16.path).variables[0].numpy())
