"""Loading modules (TF2 and TF1 Hub format), describing them, selecting outputs; `inspect`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipelines import inspect
from pipelines.hub import binding, description, fingerprints, loading, module_info
from pipelines.hub.errors import ModuleError
from tests.fixtures import tiny_modules as tm

TEXTS = ["the quick brown fox", "jumps", ""]


def test_describe_elmo_like_module(tiny):
    info = description.describe(tiny.text)
    assert info.format == "tf2"
    assert info.reusable and info.trainable
    assert info.num_trainable_variables == 2
    assert sorted(info.signatures) == ["default", "tokens"]
    default = info.signature("default")
    assert default.inputs == (module_info.TensorInfo("text", "string", (None,)),)
    assert default.outputs == (module_info.TensorInfo("default", "float32", (None, 8)),)
    tokens = info.signature("tokens")
    assert [t.name for t in tokens.inputs] == ["sequence_len", "tokens"]
    assert tokens.input("tokens").shape == (None, None)
    assert tokens.output("elmo") == module_info.TensorInfo("elmo", "float32", (None, None, 8))
    assert tokens.output("default").shape == (None, 8)
    assert info.fingerprint == fingerprints.fingerprint_dir(tiny.text)


def test_describe_tf1_hub_format_module(tiny):
    info = description.describe(tiny.tf1)
    assert info.format == "tf1_hub"
    assert not info.reusable
    assert info.signature("default").output("default").shape == (None, 6)
    out = binding.bind(loading.load(tiny.tf1))({"text": tf.constant(TEXTS)})
    np.testing.assert_allclose(out, tm.tf1_module_reference(TEXTS), atol=1e-6)


def test_describe_image_module_and_plain_module(tiny):
    image = description.describe(tiny.image).signature("default")
    assert image.inputs == (module_info.TensorInfo("images", "float32", (None, 8, 8, 3)),)
    assert description.describe(tiny.image_open).signature("default").inputs[0].shape == (None, None, None, 3)
    plain = description.describe(tiny.plain)
    assert not plain.reusable and not plain.trainable and plain.num_variables == 1
    assert list(plain.signatures) == ["serving_default"]


def test_bind_selects_signature_and_output(tiny):
    loaded = loading.load(tiny.text)
    default = binding.bind(loaded, "default", "default")({"text": tf.constant(TEXTS)})
    np.testing.assert_allclose(default, tm.text_module_reference(TEXTS), atol=1e-6)
    tokens = tf.constant([["the", "fox", ""], ["jumps", "", ""]])
    lengths = tf.constant([2, 1])
    out = binding.bind_outputs(loaded, "tokens", ("default", "elmo"))({"tokens": tokens, "sequence_len": lengths})
    assert out["elmo"].shape == (2, 3, 8)
    assert np.all(out["elmo"][1, 1:] == 0)
    np.testing.assert_allclose(out["default"][1], out["elmo"][1, 0], atol=1e-6)


def test_calling_a_module_without_output_key_uses_default(tiny):
    loaded = loading.load(tiny.text)
    assert isinstance(loaded(tf.constant(TEXTS)), dict)
    out = binding.call_default(loaded, tf.constant(TEXTS))
    np.testing.assert_allclose(out.numpy(), tm.text_module_reference(TEXTS), atol=1e-6)


def test_reusable_module_has_trainable_weights_in_keras_layer(tiny):
    import tensorflow_hub as hub

    assert len(hub.KerasLayer(tiny.text, trainable=True).trainable_weights) == 2


@pytest.mark.parametrize(
    "signature, key, message",
    [
        ("tokenz", "default", r"Signature 'tokenz' not found .*valid signatures: 'default', 'tokens'"),
        ("tokens", "lstm", r"Output key 'lstm' not found in signature 'tokens'; valid output keys: 'default', 'elmo'"),
    ],
)
def test_select_errors_name_the_bad_value_and_list_valid_ones(tiny, signature, key, message):
    info = description.describe(tiny.text)
    with pytest.raises(ModuleError, match=message):
        binding.select(info, signature, key)
    with pytest.raises(ModuleError, match=message.split(" not found")[0]):
        binding.bind(loading.load(tiny.text), signature, key)


def test_corrupt_saved_model_fails_with_clear_message(tiny, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(tiny.text, broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"\x00garbage")
    with pytest.raises(ModuleError, match=r"could not be loaded"):
        description.describe(broken)


# --------------------------------------------------------------------------- inspect CLI


def test_inspect_prints_table(tiny, capsys):
    assert inspect.main([tiny.text]) == 0
    out = capsys.readouterr().out
    assert "format:       TF2 SavedModel" in out
    assert "trainable:    yes (2 trainable of 2 variables)" in out
    assert fingerprints.fingerprint_dir(tiny.text) in out
    rows = [line.split() for line in out.splitlines()]
    assert ["tokens", "output", "elmo", "float32", "[?,", "?,", "8]"] + [
        "cut",
        "by",
        "the",
        "token",
        "counts",
        "fed",
        "to",
        "input",
        "'sequence_len'",
    ] in rows
    assert ["default", "input", "text", "string", "[?]"] in rows


def test_inspect_json_for_tf1_module(tiny, capsys):
    assert inspect.main([tiny.tf1, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "tf1_hub"
    assert data["signatures"]["default"]["outputs"] == [{"name": "default", "dtype": "float32", "shape": [None, 6]}]
    assert data["fingerprint"] == fingerprints.fingerprint_dir(tiny.tf1)


def test_inspect_command_fails_cleanly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.inspect", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Module handle")
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
