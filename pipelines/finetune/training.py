"""Training an encoder with a softmax head: hyperparameters, seeding, the classifier, its fit, and how it is measured."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from pipelines.finetune.errors import FinetuneError
from pipelines.finetune.trainable import ModuleInput

DEFAULT_EPOCHS = 3
DEFAULT_LEARNING_RATES = {"text": 5e-5, "image": 1e-3}
PROBE_L2 = 1.0

# TensorFlow and tf_keras are imported inside the functions that need them, to keep them out of this module's import.


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """Training settings; `None` fields take their defaults in `resolve`.

    Attributes:
      epochs: passes over the train split (default `DEFAULT_EPOCHS` unless `steps` is set).
      steps: optimizer steps instead of epochs.
      learning_rate: Adam learning rate (default by data kind, `DEFAULT_LEARNING_RATES`).
      batch_size: examples per step.
      seed: seeds the split, the head's initialization and the shuffling.
      holdout_fraction: share of each label held out for evaluation.
    """

    epochs: int | None = None
    steps: int | None = None
    learning_rate: float | None = None
    batch_size: int = 32
    seed: int = 0
    holdout_fraction: float = 0.2

    def resolve(self, kind: str) -> Hyperparameters:
        """Returns a copy with defaults filled in for data of `kind`.

        Raises:
          FinetuneError: both epochs and steps, or a non-positive value.
        """
        if self.epochs is not None and self.steps is not None:
            raise FinetuneError("Give epochs or steps, not both.")
        resolved = dataclasses.replace(
            self,
            epochs=DEFAULT_EPOCHS if self.epochs is None and self.steps is None else self.epochs,
            learning_rate=DEFAULT_LEARNING_RATES[kind] if self.learning_rate is None else self.learning_rate,
        )
        for field in ("epochs", "steps", "learning_rate", "batch_size"):
            value = getattr(resolved, field)
            if value is not None and not value > 0:
                raise FinetuneError(f"{field} must be positive, got {value}.")
        return resolved


DEFAULT_HYPERPARAMETERS = Hyperparameters()


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TensorFlow ops deterministic (process-wide)."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_classifier(
    encoder: Any, module_in: ModuleInput, num_classes: int, encoder_training_mode: bool = True
) -> tuple[Any, Any]:
    """Wires `encoder` (a tf_keras layer) and a dense head into `(classifier, encoder_model)`.

    `classifier` maps inputs to logits; `encoder_model` shares its encoder and
    maps inputs to embeddings. With `encoder_training_mode=False` the encoder
    always runs in inference mode (no dropout), also while training; its
    weights still train.
    """
    import tf_keras

    inputs = tf_keras.Input(shape=module_in.shape, dtype=module_in.dtype, name="inputs")
    embeddings = encoder(inputs) if encoder_training_mode else encoder(inputs, training=False)
    logits = tf_keras.layers.Dense(num_classes, name="head")(embeddings)
    return tf_keras.Model(inputs, logits, name="classifier"), tf_keras.Model(inputs, embeddings, name="encoder")


def train(classifier: Any, inputs: np.ndarray, labels: np.ndarray, hparams: Hyperparameters, verbose: int = 0) -> int:
    """Trains a classifier from `build_classifier`; returns the steps run.

    Args:
      classifier: the model `build_classifier` returned.
      inputs: the training examples.
      labels: int class indices, one per example.
      hparams: resolved hyperparameters (`Hyperparameters.resolve`).
      verbose: tf_keras `fit` verbosity (0 silent, 2 one line per epoch).
    """
    import tensorflow as tf
    import tf_keras

    dataset = (
        tf.data.Dataset.from_tensor_slices((inputs, labels))
        .shuffle(len(labels), seed=hparams.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(hparams.batch_size)
    )
    epochs = 1 if hparams.steps else hparams.epochs
    if epochs is None:
        raise FinetuneError("Hyperparameters must be resolved before training (Hyperparameters.resolve).")
    steps_per_epoch = hparams.steps or math.ceil(len(labels) / hparams.batch_size)
    classifier.compile(
        optimizer=tf_keras.optimizers.Adam(hparams.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    classifier.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose)
    return steps_per_epoch * epochs


def embed(encoder_model: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeddings of `inputs` (inference mode) as float64."""
    return np.asarray(encoder_model.predict(inputs, batch_size=batch_size, verbose=0), dtype=np.float64)


def head_metrics(classifier: Any, embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Loss (cross-entropy) and accuracy of the classifier's head on precomputed embeddings."""
    logits = np.asarray(classifier.get_layer("head")(embeddings.astype(np.float32)), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels]
    return {"loss": float(np.mean(loss)), "accuracy": float(np.mean(np.argmax(logits, axis=1) == labels))}


def probe_accuracy(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    l2: float = PROBE_L2,
) -> float:
    """Test accuracy of a ridge classifier fitted in closed form on train embeddings.

    Features are standardized with the train split's statistics; the classifier
    regresses one-hot targets (with an unpenalized bias). No randomness, so it
    compares two encoders with exactly the same head.
    """
    mean, std = train_embeddings.mean(axis=0), train_embeddings.std(axis=0) + 1e-6

    def features(x: np.ndarray) -> np.ndarray:
        return np.hstack([(x - mean) / std, np.ones((len(x), 1))])

    a = features(train_embeddings)
    penalty = l2 * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(a.T @ a + penalty, a.T @ np.eye(num_classes)[train_labels])
    return float(np.mean(np.argmax(features(test_embeddings) @ weights, axis=1) == test_labels))
