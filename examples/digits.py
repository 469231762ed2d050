"""`digits-encoder`: a small image encoder trained from scratch on the UCI digits, and data to fine-tune it on.

The pretrain half of the digits (0-4 only) trains a CNN encoder exported as
version 1; the fine-tune half (all ten digits) is written as PNG folders for
`python -m pipelines.finetune`. Run from the repository root:

    python -m examples.digits --output-root ROOT [--data-dir DIR] [--epochs N] [--seed N]

The data and its licence: `examples/data/digits.md`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import io
import os
import sys
from collections.abc import Sequence

import numpy as np

from pipelines import export
from pipelines.embedding.config import PreprocessConfig
from pipelines.embedding.preprocess import decode_image
from pipelines.finetune.trainable import ModuleInput
from pipelines.finetune.training import Hyperparameters, build_classifier, set_seed, train

NAME = "digits-encoder"
IMAGE_SIZE = (32, 32)
EMBEDDING_DIM = 32
PRETRAIN_DIGITS = (0, 1, 2, 3, 4)
DEFAULT_EPOCHS = 8
DATA_DIR_NAME = "digits-finetune-data"


DIGITS_CSV = str(importlib.resources.files("examples") / "data" / "digits.csv.gz")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits of `examples/data/digits.csv.gz`: pixel counts float64 `[1797, 8, 8]` in 0..16, and int32 labels `[1797]`."""
    table = np.loadtxt(DIGITS_CSV, delimiter=",")  # numpy reads the .gz itself
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)


def digits_png() -> tuple[list[bytes], np.ndarray]:
    """All the digits as 8x8 grayscale PNG files, and their labels."""
    from PIL import Image

    images, labels = load_digits()
    pixels = np.round(images * (255.0 / 16.0)).astype(np.uint8)
    files = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files, labels


def decode(files: Sequence[bytes]) -> np.ndarray:
    """PNG files -> float32 `[N, 32, 32, 3]` in [0, 1], as the embedding pipeline decodes them."""
    max_pixels = PreprocessConfig().max_image_pixels
    return np.stack([decode_image(f, IMAGE_SIZE, max_pixels) for f in files])


def halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of example indices into (pretrain, fine-tune) halves."""
    rng = np.random.default_rng(seed)
    pretrain: list[int] = []
    rest: list[int] = []
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        pretrain.extend(members[: len(members) // 2])
        rest.extend(members[len(members) // 2 :])
    return np.sort(pretrain), np.sort(rest)


def build_encoder() -> object:
    """The untrained CNN encoder, a tf_keras model `[N, 32, 32, 3] -> [N, EMBEDDING_DIM]`."""
    import tf_keras

    layers = tf_keras.layers
    images = tf_keras.Input((*IMAGE_SIZE, 3), name="images")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(images)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    embedding = layers.Dense(EMBEDDING_DIM, activation="relu", name="embedding")(x)
    return tf_keras.Model(images, embedding, name="digits_encoder")


def pretrain(images: np.ndarray, labels: np.ndarray, epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> object:
    """Trains a fresh encoder + head on `images`; returns the trained encoder (without the head)."""
    set_seed(seed)
    encoder = build_encoder()
    classes = int(labels.max()) + 1
    module_in = ModuleInput("image", (*IMAGE_SIZE, 3), "float32")
    classifier, _ = build_classifier(encoder, module_in, classes)
    hparams = Hyperparameters(epochs=epochs, seed=seed).resolve("image")
    train(classifier, images, labels, hparams)
    return encoder


def write_images(directory: str, files: Sequence[bytes], labels: np.ndarray) -> str:
    """Writes PNG files as `<directory>/<label>/<index>.png`; returns `directory`.

    Raises:
      FileExistsError: `directory` exists and is not empty (data sets are never mixed).
    """
    if os.path.isdir(directory) and os.listdir(directory):
        raise FileExistsError(f"{directory} is not empty; pick another data directory.")
    for index, (data, label) in enumerate(zip(files, labels)):
        folder = os.path.join(directory, str(label))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{index:04d}.png"), "wb") as f:
            f.write(data)
    return directory


def build(
    output_root: str,
    data_dir: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    finetune_limit: int | None = None,
) -> tuple[export.ExportResult, str]:
    """Exports version 1 of `digits-encoder` and writes the fine-tune images.

    Args:
      output_root: modules root; writes `<output_root>/digits-encoder/<next version>`.
      data_dir: where the fine-tune half goes (default `<output_root>/digits-finetune-data`).
      epochs: pretraining epochs.
      seed: seeds the split and the training.
      finetune_limit: keep at most this many fine-tune images per digit (small test runs).

    Returns:
      The exported version and the fine-tune data directory.
    """
    files, labels = digits_png()
    pretrain_idx, finetune_idx = halves(labels, seed)
    pretrain_idx = pretrain_idx[np.isin(labels[pretrain_idx], PRETRAIN_DIGITS)]
    encoder = pretrain(decode([files[i] for i in pretrain_idx]), labels[pretrain_idx], epochs, seed)
    result = export.export_module(
        encoder,
        output_root,
        NAME,
        source_description=f"CNN trained from scratch on the UCI digits {list(PRETRAIN_DIGITS)}",
        extra_manifest={
            "pretrain": {
                "dataset": "examples/data/digits.csv.gz (UCI digits, as sklearn.datasets.load_digits)",
                "digits": list(PRETRAIN_DIGITS),
                "examples": len(pretrain_idx),
                "epochs": epochs,
                "seed": seed,
            }
        },
    )
    if finetune_limit is not None:
        finetune_idx = np.concatenate(
            [finetune_idx[labels[finetune_idx] == d][:finetune_limit] for d in np.unique(labels)]
        )
    directory = data_dir or os.path.join(output_root, DATA_DIR_NAME)
    write_images(directory, [files[i] for i in finetune_idx], labels[finetune_idx])
    return result, directory


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the version path, its fingerprint and the fine-tune data directory."""
    parser = argparse.ArgumentParser(prog="python -m examples.digits", description=__doc__.splitlines()[0])
    parser.add_argument("--output-root", required=True, help="modules root")
    parser.add_argument("--data-dir", help=f"fine-tune images (default ROOT/{DATA_DIR_NAME})")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result, directory = build(args.output_root, args.data_dir, args.epochs, args.seed)
    print(f"{result.path} {result.fingerprint}")
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
