"""ModelSpec: the config checked against the module's signature, and how to call it."""

from __future__ import annotations

import pytest

from pipelines.embedding import config, model_spec
from pipelines.embedding.config import ConfigError


def _spec(tiny_path, **values):
    from pipelines.hub import description

    cfg = config.from_dict({"output": "o", **values, "module": tiny_path})
    return model_spec.for_module(cfg, description.describe(tiny_path))


def test_model_spec_for_text_modules(tiny):
    pooled = _spec(tiny.text, input="x.txt")
    assert (pooled.kind, pooled.inputs, pooled.dim, pooled.sequence, pooled.tokenized) == (
        "text",
        ("text",),
        8,
        False,
        False,
    )
    tokens = _spec(tiny.text, input="x.txt", signature="tokens", output_key="elmo")
    assert tokens.inputs == ("tokens", "sequence_len") and tokens.input_dtypes == ("string", "int32")
    assert tokens.sequence and tokens.tokenized and tokens.trim.label() == "fed:sequence_len" and tokens.dim == 8
    tf1 = _spec(tiny.tf1, input="x.txt")
    assert (tf1.inputs, tf1.dim) == (("text",), 6)


def test_batch_size_is_the_configs_else_the_modules_recommendation_else_the_default(tiny):
    import dataclasses

    from pipelines.hub import description

    info = description.describe(tiny.text)
    assert info.recommended_batch_size is None
    recommending = dataclasses.replace(info, recommended_batch_size=1024)
    default_cfg = config.from_dict({"output": "o", "input": "x.txt", "module": tiny.text})
    set_cfg = config.from_dict({"output": "o", "input": "x.txt", "module": tiny.text, "batch_size": 8})
    assert model_spec.for_module(default_cfg, info).batch_size == config.DEFAULT_BATCH_SIZE["text"]
    assert model_spec.for_module(default_cfg, recommending).batch_size == 1024
    assert model_spec.for_module(set_cfg, recommending).batch_size == 8
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        config.from_dict({"output": "o", "input": "x.txt", "batch_size": 0})


def test_model_spec_for_image_modules(tiny):
    fixed = _spec(tiny.image, input="x.png")
    assert (fixed.kind, fixed.image_size, fixed.batch_size) == ("image", (8, 8), config.DEFAULT_BATCH_SIZE["image"])
    assert _spec(tiny.image_open, input="x.png", image_size=5).image_size == (5, 5)
    with pytest.raises(ConfigError, match="input size is open; set image_size"):
        _spec(tiny.image_open, input="x.png")
    with pytest.raises(ConfigError, match=r"image_size \[4, 4\] does not match"):
        _spec(tiny.image, input="x.png", image_size=4)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"input": "x.txt", "signature": "serving"},
            "Signature 'serving' not found.*valid signatures: 'default', 'tokens'",
        ),
        ({"input": "x.txt", "output_key": "pooled"}, "Output key 'pooled' not found.*valid output keys: 'default'"),
        ({"input": "x.png"}, "image input needs one float32"),
    ],
)
def test_model_spec_rejects_what_the_module_cannot_do(tiny, values, message):
    with pytest.raises(ConfigError, match=message):
        _spec(tiny.text, **values)


def test_model_spec_rejects_text_input_for_image_module(tiny):
    with pytest.raises(ConfigError, match=r"takes images: float32\[None, 8, 8, 3\].*needs one 1-D string input"):
        _spec(tiny.image, input="x.txt")
