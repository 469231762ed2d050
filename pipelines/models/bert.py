"""A BERT encoder as plain `tf.Module`s, loadable from HuggingFace weights.

Only what sentence-transformers' BERT models use at inference and fine-tuning:
word + position + token-type embeddings, post-LayerNorm transformer blocks
with GELU (erf) feed-forward layers, dropout when `training`. No pooler head.
Activations are kept as 2-D [tokens, hidden] matrices between attention
blocks so every dense layer is one plain matmul.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

# HuggingFace checkpoint entries that this encoder does not use.
_UNUSED_HF_WEIGHTS = ("embeddings.position_ids", "pooler.")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder (HuggingFace `config.json` names)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> BertConfig:
        """Picks this class's fields out of a HuggingFace BERT `config.json` dict.

        Raises:
            ValueError: if the config is not a BERT with absolute positions and GELU.
        """
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {config['hidden_act']!r}; expected 'gelu'")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in names})


def _initial(shape: tuple[int, ...], stddev: float) -> tf.Tensor:
    return tf.random.truncated_normal(shape, stddev=stddev)


def _dropout(x: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
    return tf.nn.dropout(x, rate) if training and rate > 0 else x


class Dense(tf.Module):
    """y = x @ kernel + bias, kernel stored [in, out] (HF stores [out, in])."""

    def __init__(self, units_in: int, units_out: int, stddev: float, name: str):
        super().__init__(name=name)
        with self.name_scope:
            self.kernel = tf.Variable(_initial((units_in, units_out), stddev), name="kernel")
            self.bias = tf.Variable(tf.zeros([units_out]), name="bias")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # BiasAdd (not AddV2) lets grappler fuse it into the matmul.
        return tf.nn.bias_add(tf.matmul(x, self.kernel), self.bias)

    def hf_weights(self, prefix: str) -> dict[str, tuple[tf.Variable, bool]]:
        return {f"{prefix}.weight": (self.kernel, True), f"{prefix}.bias": (self.bias, False)}


class LayerNorm(tf.Module):
    """Layer normalization over the last axis (biased variance, like PyTorch)."""

    def __init__(self, size: int, eps: float, name: str):
        super().__init__(name=name)
        self.eps = eps
        with self.name_scope:
            self.gamma = tf.Variable(tf.ones([size]), name="gamma")
            self.beta = tf.Variable(tf.zeros([size]), name="beta")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + self.eps) * self.gamma + self.beta

    def hf_weights(self, prefix: str) -> dict[str, tuple[tf.Variable, bool]]:
        return {f"{prefix}.weight": (self.gamma, False), f"{prefix}.bias": (self.beta, False)}


class TransformerBlock(tf.Module):
    """One BERT layer: self-attention and feed-forward, each Add & LayerNorm."""

    def __init__(self, config: BertConfig, name: str):
        super().__init__(name=name)
        hidden, std = config.hidden_size, config.initializer_range
        self.num_heads = config.num_attention_heads
        self.head_size = hidden // self.num_heads
        self.config = config
        with self.name_scope:
            self.query = Dense(hidden, hidden, std, "query")
            self.key = Dense(hidden, hidden, std, "key")
            self.value = Dense(hidden, hidden, std, "value")
            self.attention_output = Dense(hidden, hidden, std, "attention_output")
            self.attention_norm = LayerNorm(hidden, config.layer_norm_eps, "attention_norm")
            self.intermediate = Dense(hidden, config.intermediate_size, std, "intermediate")
            self.output = Dense(config.intermediate_size, hidden, std, "output")
            self.output_norm = LayerNorm(hidden, config.layer_norm_eps, "output_norm")

    def _heads(self, x: tf.Tensor, batch: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
        """[batch*length, hidden] -> [batch, heads, length, head_size]."""
        x = tf.reshape(x, [batch, length, self.num_heads, self.head_size])
        return tf.transpose(x, [0, 2, 1, 3])

    def __call__(
        self,
        x: tf.Tensor,
        attention_bias: tf.Tensor,
        batch: tf.Tensor,
        length: tf.Tensor,
        training: bool,
    ) -> tf.Tensor:
        """Applies the block.

        Args:
            x: float32 [batch*length, hidden].
            attention_bias: float32 [batch, 1, 1, length], 0 for real tokens and
                a large negative number for padding.
            batch: number of sequences.
            length: tokens per sequence.
            training: apply dropout.

        Returns:
            float32 [batch*length, hidden].
        """
        config = self.config
        query = self._heads(self.query(x), batch, length)
        key = self._heads(self.key(x), batch, length)
        value = self._heads(self.value(x), batch, length)
        scores = tf.matmul(query, key, transpose_b=True) / math.sqrt(self.head_size)
        probs = tf.nn.softmax(scores + attention_bias, axis=-1)
        probs = _dropout(probs, config.attention_probs_dropout_prob, training)
        context = tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])
        context = tf.reshape(context, [-1, config.hidden_size])
        attended = _dropout(self.attention_output(context), config.hidden_dropout_prob, training)
        x = self.attention_norm(x + attended)
        hidden = tf.nn.gelu(self.intermediate(x), approximate=False)
        out = _dropout(self.output(hidden), config.hidden_dropout_prob, training)
        return self.output_norm(x + out)

    def hf_weights(self, prefix: str) -> dict[str, tuple[tf.Variable, bool]]:
        parts: dict[str, Any] = {
            "attention.self.query": self.query,
            "attention.self.key": self.key,
            "attention.self.value": self.value,
            "attention.output.dense": self.attention_output,
            "attention.output.LayerNorm": self.attention_norm,
            "intermediate.dense": self.intermediate,
            "output.dense": self.output,
            "output.LayerNorm": self.output_norm,
        }
        weights = {}
        for name, part in parts.items():
            weights.update(part.hf_weights(f"{prefix}.{name}"))
        return weights


class BertEncoder(tf.Module):
    """Embeddings plus a stack of transformer blocks; returns token embeddings."""

    def __init__(self, config: BertConfig, name: str | None = None):
        super().__init__(name=name)
        self.config = config
        hidden, std = config.hidden_size, config.initializer_range
        with self.name_scope:
            self.word_embeddings = tf.Variable(_initial((config.vocab_size, hidden), std), name="word_embeddings")
            self.position_embeddings = tf.Variable(
                _initial((config.max_position_embeddings, hidden), std), name="position_embeddings"
            )
            self.token_type_embeddings = tf.Variable(
                _initial((config.type_vocab_size, hidden), std), name="token_type_embeddings"
            )
            self.embedding_norm = LayerNorm(hidden, config.layer_norm_eps, "embedding_norm")
            self.blocks = [TransformerBlock(config, f"layer_{i}") for i in range(config.num_hidden_layers)]

    def __call__(self, token_ids: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Encodes padded token ids (all token-type 0).

        Args:
            token_ids: int32 [batch, length].
            mask: int32 [batch, length], 1 for real tokens, 0 for padding.
            training: apply dropout.

        Returns:
            float32 [batch, length, hidden] token embeddings.
        """
        shape = tf.shape(token_ids)
        batch, length = shape[0], shape[1]
        x = tf.gather(self.word_embeddings, tf.reshape(token_ids, [-1]))
        x = tf.reshape(x, [batch, length, -1]) + self.position_embeddings[:length]
        x = tf.reshape(x + self.token_type_embeddings[0], [-1, self.config.hidden_size])
        x = _dropout(self.embedding_norm(x), self.config.hidden_dropout_prob, training)
        attention_bias = (1.0 - tf.cast(mask, tf.float32)) * -1e9
        attention_bias = attention_bias[:, tf.newaxis, tf.newaxis, :]
        for block in self.blocks:
            x = block(x, attention_bias, batch, length, training)
        return tf.reshape(x, [batch, length, self.config.hidden_size])

    def hf_weights(self) -> dict[str, tuple[tf.Variable, bool]]:
        """Maps HuggingFace weight names to (variable, needs transpose)."""
        weights = {
            "embeddings.word_embeddings.weight": (self.word_embeddings, False),
            "embeddings.position_embeddings.weight": (self.position_embeddings, False),
            "embeddings.token_type_embeddings.weight": (self.token_type_embeddings, False),
            **self.embedding_norm.hf_weights("embeddings.LayerNorm"),
        }
        for i, block in enumerate(self.blocks):
            weights.update(block.hf_weights(f"encoder.layer.{i}"))
        return weights

    def load_hf_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Assigns a HuggingFace `BertModel` state dict (names without "bert.").

        Raises:
            ValueError: on missing, unexpected or mis-shaped weights.
        """
        targets = self.hf_weights()
        missing = sorted(set(targets) - set(weights))
        unexpected = sorted(name for name in set(weights) - set(targets) if not name.startswith(_UNUSED_HF_WEIGHTS))
        if missing or unexpected:
            raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
        for name, (variable, transpose) in targets.items():
            value = np.asarray(weights[name], dtype=np.float32)
            value = value.T if transpose else value
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{name}: shape {value.shape}, expected {tuple(variable.shape)}")
            variable.assign(value)
