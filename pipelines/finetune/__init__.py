"""Fine-tune a reusable TF Hub module on labeled data and export it as the next version.

`finetune(module, data, output_root)`:

1. resolves the module handle and loads it as `hub.KerasLayer(module,
   trainable=True)` (tf_keras); the module must be reusable and trainable
   (`pipelines.export` writes such modules). A TF1 Hub-format module is first
   migrated by the export tool (`pipelines.export.tf1_migrate`: trainable
   tf.Variables, its `{"train"}` graph for training) into a scratch directory,
   verified against the TF1 module, and that migration is fine-tuned; the
   published version names the TF1 module as its parent and records the
   migration under `extra.tf1_migration`;
2. reads and validates the labeled data (`pipelines.finetune.labeled`): texts when the
   module's `default` signature takes strings `[N]`, images when it takes
   floats `[N, H, W, 3]`. Bad data fails here, before any training;
3. splits off a stratified held-out set, adds a dense softmax head and trains
   encoder and head together (Adam, sparse categorical cross-entropy);
4. exports the fine-tuned **encoder** (the loaded module object, its
   variables now trained; the head is dropped) with `export.export_module` as
   the next version `<output_root>/<name>/<version>/`: the parent's version
   + 1, or the next free one if `<output_root>` already has a higher version
   of `<name>` (a different `name` starts at its own next free version). Re-saving the loaded
   object keeps every signature of the parent (those we did not write too,
   e.g. a `tokens` signature) and its `__call__`; the export is verified
   against the in-memory fine-tuned encoder (max abs diff 1e-5) before it is
   published. A bfloat16 parent (`pipelines.export.precision`) trains with bfloat16
   matmuls and float32 weights, and its child is a bfloat16 version too
   (verified by cosine against the in-memory encoder). Its manifest links the
   parent (name, version, fingerprint) and records, under `extra.finetune`,
   the data (path, content hash, classes), the hyperparameters and the metrics.

Metrics: loss and accuracy of the fine-tuned encoder + head on the train and
held-out splits, and a *probe*: the held-out accuracy of a closed-form ridge
classifier fitted on the train split's embeddings, for the parent and for the
fine-tuned encoder, so the two encoders are compared with the same head.

Runs are deterministic for a given `seed` on CPU: the seed drives the split,
the head's initialization and the shuffling, and op determinism is enabled
(`tf.config.experimental.enable_op_determinism`, process-wide). A module whose
graph has unseeded random ops (dropout traced without a seed) cannot be run
deterministically in training mode, so such a module is fine-tuned in
inference mode: no dropout, its weights still train
(`metrics.training.module_training_mode` says which).

CLI: `python -m pipelines.finetune --module HANDLE --data PATH --task
classification --output-root ROOT [--name NAME] [--epochs N | --steps N]
[--learning-rate LR] [--batch-size N] [--seed N] [--holdout-fraction F]
[--pack]` prints the metrics and, as its last line, a JSON summary (path,
name, version, fingerprint, parent, metrics).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines import console, export
from pipelines.export import precision as reduced_precision
from pipelines.finetune import labeled
from pipelines.hub import loading, module_dirs, module_info, registry, resolver
from pipelines.hub.description import describe_loaded
from pipelines.hub.errors import HandleError, ModuleError
from pipelines.hub.module_manifest import read_module_manifest
from pipelines.hub.redaction import redact

TASKS = ("classification",)
DEFAULT_EPOCHS = 3
DEFAULT_LEARNING_RATES = {"text": 5e-5, "image": 1e-3}
PROBE_L2 = 1.0
VERIFY_EXAMPLES = 8
# Stateful random ops: with `seed` and `seed2` both 0 in a saved graph they draw from a random seed.
_STATEFUL_RANDOM_OPS = frozenset(
    {
        "Multinomial",
        "ParameterizedTruncatedNormal",
        "RandomGamma",
        "RandomPoisson",
        "RandomPoissonV2",
        "RandomShuffle",
        "RandomStandardNormal",
        "RandomUniform",
        "RandomUniformInt",
        "TruncatedNormal",
    }
)


class FinetuneError(ValueError):
    """A fine-tuning run that cannot start: bad module, task or hyperparameters."""


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


@dataclasses.dataclass(frozen=True)
class ModuleInput:
    """What a module's `default` signature takes: the data kind and the shape of one example."""

    kind: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def image_size(self) -> tuple[int, int] | None:
        return (self.shape[0], self.shape[1]) if self.kind == "image" else None


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuned, published module version.

    Attributes:
      export: the published version (path, version, fingerprint, manifest).
      metrics: as written to the manifest's `extra.finetune.metrics`.
      encoder: the in-memory fine-tuned module object that was exported.
      classes: the head's classes, in output order.
    """

    export: export.ExportResult
    metrics: dict[str, Any]
    encoder: Any
    classes: tuple[str, ...]


def module_input(info: module_info.ModuleInfo) -> ModuleInput:
    """Classifies a module's `default` input as text (`[N]` string) or image (`[N, H, W, 3]` float).

    Raises:
      FinetuneError: the module cannot be fine-tuned (not trainable, or another input).
    """
    if not info.trainable:
        raise FinetuneError(
            f"Module {redact(info.handle)!r} is not a reusable module with trainable variables; "
            "re-export it with `python -m pipelines.export` first."
        )
    signature = info.signature(module_info.DEFAULT_SIGNATURE)
    if len(signature.inputs) == 1:
        spec = signature.inputs[0]
        if spec.dtype == "string" and spec.shape == (None,):
            return ModuleInput("text", (), spec.dtype)
        if spec.dtype.startswith("float") and len(spec.shape) == 4 and spec.shape[3] == 3:
            if None in spec.shape[1:3]:
                raise FinetuneError(
                    f"Module {redact(info.handle)!r} takes images of any size; "
                    "fine-tuning needs a module with a fixed input height and width."
                )
            return ModuleInput("image", tuple(spec.shape[1:]), spec.dtype)
    inputs = ", ".join(f"{t.name}: {t.dtype}{list(t.shape)}" for t in signature.inputs)
    raise FinetuneError(
        f"Module {redact(info.handle)!r} default signature takes ({inputs}); fine-tuning supports texts "
        "(string [N]) and images (float [N, H, W, 3])."
    )


def unseeded_random_ops(path: str) -> list[str]:
    """Names of the stateful random ops without a seed in a SavedModel's graph and functions.

    Such ops (typically dropout in a module traced without a global seed) cannot
    be made deterministic from outside, and TensorFlow refuses to run them when
    op determinism is enabled.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    found = []
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        for node in [*graph.node, *(n for function in graph.library.function for n in function.node_def)]:
            if node.op in _STATEFUL_RANDOM_OPS and node.attr["seed"].i == 0 and node.attr["seed2"].i == 0:
                found.append(node.name)
    return found


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TensorFlow ops deterministic (process-wide)."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


# --------------------------------------------------------------------------- model


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
    """Trains a classifier from `build_classifier` (hyperparameters resolved); returns the steps run."""
    import tensorflow as tf
    import tf_keras

    dataset = (
        tf.data.Dataset.from_tensor_slices((inputs, labels))
        .shuffle(len(labels), seed=hparams.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(hparams.batch_size)
    )
    steps_per_epoch = hparams.steps or math.ceil(len(labels) / hparams.batch_size)
    epochs = 1 if hparams.steps else hparams.epochs
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


# --------------------------------------------------------------------------- fine-tune


def finetune(
    module: str,
    data: str,
    output_root: str,
    *,
    task: str = "classification",
    name: str | None = None,
    hparams: Hyperparameters = Hyperparameters(),
    pack: bool = False,
    verbose: int = 0,
) -> FinetuneResult:
    """Fine-tunes a module on labeled data and exports the encoder as the next version.

    Args:
      module: handle of a reusable, trainable module (any `registry.resolve` form).
      data: labeled data (see `pipelines.finetune.labeled`); its kind follows the module's input.
      output_root: modules root; the new version is `<output_root>/<name>/<next version>` (see the module docstring).
      task: only "classification".
      name: module name to publish under (default: the parent's manifest name).
      hparams: training settings.
      pack: also write `<output_root>/<name>/<version>.tar.gz`.
      verbose: tf_keras `fit` verbosity (0 silent, 2 one line per epoch).

    Returns:
      The published version, its metrics and the in-memory fine-tuned encoder.

    Raises:
      HandleError, ModuleError: the module cannot be resolved or loaded.
      FinetuneError: unsupported task or module, bad hyperparameters, no module name.
      labeled.DataError: bad data (raised before training).
      export.ExportError: the export failed verification; nothing was published.
    """
    if task not in TASKS:
        raise FinetuneError(f"Unknown task {task!r}; supported: {', '.join(TASKS)}.")
    resolved = registry.resolve(module)
    if not (name or read_module_manifest(resolved.path).get("name")):
        raise FinetuneError(f"Module {redact(module)!r} has no name in a module.json; pass a name.")
    with tempfile.TemporaryDirectory(prefix="hub-embed-tf1-migration-") as scratch:
        trainable_path, migration = _trainable_module(resolved, scratch)
        return _finetune(
            module, resolved, trainable_path, migration, data, output_root, task, name, hparams, pack, verbose
        )


def _trainable_module(resolved: resolver.ResolvedModule, scratch: str) -> tuple[str, dict[str, Any] | None]:
    """The module directory to train: the module itself, or the migration of a TF1 Hub-format module.

    Returns:
      (path, what the migration's module.json records about its TF1 source, or None).
    """
    if module_dirs.module_format(resolved.path) != "tf1_hub":
        return resolved.path, None
    migrated = export.export_module(
        resolved.path, scratch, "tf1-migration", source_description=f"TF1 Hub module {redact(resolved.handle)}"
    )
    return migrated.path, migrated.manifest["source"]


def _finetune(
    module: str,
    resolved: resolver.ResolvedModule,
    trainable_path: str,
    migration: dict[str, Any] | None,
    data: str,
    output_root: str,
    task: str,
    name: str | None,
    hparams: Hyperparameters,
    pack: bool,
    verbose: int,
) -> FinetuneResult:
    """`finetune` once the module to train is at `trainable_path` (see `_trainable_module`)."""
    import tensorflow_hub as hub

    loaded = loading.load(trainable_path)
    info = describe_loaded(loaded, resolved)
    module_in = module_input(info)
    name = name or info.name
    if not name:
        raise FinetuneError(f"Module {redact(module)!r} has no name in a module.json; pass a name.")
    hparams = hparams.resolve(module_in.kind)
    examples = labeled.read(data, module_in.kind, module_in.image_size)
    train_idx, holdout_idx = labeled.split(examples, hparams.holdout_fraction, hparams.seed)
    splits = {"train": examples.subset(train_idx), "holdout": examples.subset(holdout_idx)}
    splits = {split: (x, y) for split, (x, y) in splits.items() if len(y)}

    set_seed(hparams.seed)
    training_mode = not unseeded_random_ops(trainable_path)
    encoder = hub.KerasLayer(loaded, trainable=True, output_key=_output_key(loaded, examples.inputs[:1]), name="module")
    classifier, encoder_model = build_classifier(encoder, module_in, len(examples.classes), training_mode)

    def embed_splits() -> dict[str, np.ndarray]:
        return {split: embed(encoder_model, x, hparams.batch_size) for split, (x, _) in splits.items()}

    parent_embeddings = embed_splits() if "holdout" in splits else None
    start = time.monotonic()
    steps = train(classifier, *splits["train"], hparams, verbose)
    seconds = time.monotonic() - start
    labels = {split: y for split, (_, y) in splits.items()}
    metrics = _metrics(classifier, len(examples.classes), labels, embed_splits(), parent_embeddings)
    metrics["training"] = {"steps": steps, "seconds": round(seconds, 3), "module_training_mode": training_mode}
    parent = export.ModuleRef(module, resolved.fingerprint, info.name, info.version)
    probe_name = info.signature(module_info.DEFAULT_SIGNATURE).inputs[0].name
    published = export.export_module(
        loaded,
        output_root,
        name,
        version=_version(output_root, name, info),
        parent=parent,
        probe_inputs={module_info.DEFAULT_SIGNATURE: {probe_name: examples.inputs[:VERIFY_EXAMPLES]}},
        source_description=f"fine-tuned {redact(module)}",
        extra_manifest={
            "finetune": _record(task, examples, hparams, metrics),
            **({"tf1_migration": migration} if migration else {}),
        },
        batch_size=info.recommended_batch_size,  # same graph, same best call size
        pack=pack,
        precision=info.precision if info.precision in reduced_precision.PRECISIONS else reduced_precision.FLOAT32,
    )
    return FinetuneResult(published, metrics, loaded, examples.classes)


def _version(output_root: str, name: str, parent: module_info.ModuleInfo) -> int | None:
    """The parent's version + 1 when `output_root` has no version of `name` that high yet.

    Otherwise None: the export tool then picks the next free version under its lock.
    """
    if name != parent.name or parent.version is None:
        return None
    latest = export.latest_version(output_root, name) or 0
    return parent.version + 1 if latest <= parent.version else None


def _output_key(loaded: Any, example: np.ndarray) -> str | None:
    """`"default"` when the module's `__call__` returns a dict (as `hub.KerasLayer` then needs), else None."""
    import tensorflow as tf

    return module_info.DEFAULT_OUTPUT_KEY if isinstance(loaded(tf.constant(example)), Mapping) else None


def _metrics(
    classifier: Any,
    num_classes: int,
    labels: dict[str, np.ndarray],
    tuned: dict[str, np.ndarray],
    parent: dict[str, np.ndarray] | None,
) -> dict[str, Any]:
    """Head metrics per split (None for an empty held-out split) and the parent-vs-fine-tuned probe."""
    metrics: dict[str, Any] = {
        split: {"examples": len(labels[split]), **head_metrics(classifier, tuned[split], labels[split])}
        if split in labels
        else None
        for split in ("train", "holdout")
    }
    if parent is None:
        metrics["probe"] = None
        return metrics

    def probe(embeddings: dict[str, np.ndarray]) -> float:
        train, holdout = embeddings["train"], embeddings["holdout"]
        return probe_accuracy(train, labels["train"], holdout, labels["holdout"], num_classes)

    metrics["probe"] = {
        "head": f"ridge(l2={PROBE_L2:g}) on train-split embeddings, held-out accuracy",
        "parent_holdout_accuracy": probe(parent),
        "finetuned_holdout_accuracy": probe(tuned),
    }
    return metrics


def _record(task: str, examples: labeled.LabeledData, hparams: Hyperparameters, metrics: dict[str, Any]) -> dict:
    """The manifest's `extra.finetune` entry."""
    return {
        "task": task,
        "data": {
            "path": os.path.abspath(examples.path),
            "kind": examples.kind,
            "content_hash": examples.content_hash,
            "examples": len(examples),
            "classes": list(examples.classes),
        },
        "hyperparameters": dataclasses.asdict(hparams),
        "metrics": metrics,
    }


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.finetune",
        description="Fine-tune a reusable TF Hub module on labeled data; export the encoder as the next version.",
    )
    parser.add_argument("--module", required=True, help="handle of the module to fine-tune")
    parser.add_argument(
        "--data",
        required=True,
        help="text: .jsonl/.csv (text, label); images: a folder per label or .jsonl (path, label)",
    )
    parser.add_argument("--task", default="classification", choices=TASKS)
    parser.add_argument("--output-root", required=True, help="modules root; writes ROOT/NAME/NEXT_VERSION")
    parser.add_argument("--name", help="module name (default: the parent's)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help=f"passes over the train split (default {DEFAULT_EPOCHS})")
    length.add_argument("--steps", type=int, help="optimizer steps instead of epochs")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (default: 5e-5 text, 1e-3 images)")
    parser.add_argument("--batch-size", type=int, default=Hyperparameters.batch_size)
    parser.add_argument("--seed", type=int, default=Hyperparameters.seed)
    parser.add_argument("--holdout-fraction", type=float, default=Hyperparameters.holdout_fraction)
    parser.add_argument("--pack", action="store_true", help="also write ROOT/NAME/VERSION.tar.gz")
    console.add_verbose_flag(parser)
    return parser.parse_args(argv)


def _summary_lines(result: FinetuneResult) -> list[str]:
    metrics = result.metrics
    lines = [f"train:   {_format(metrics['train'])}"]
    if metrics["holdout"]:
        probe = metrics["probe"]
        lines += [
            f"holdout: {_format(metrics['holdout'])}",
            f"probe (same ridge head, held-out accuracy): parent {probe['parent_holdout_accuracy']:.4f} -> "
            f"fine-tuned {probe['finetuned_holdout_accuracy']:.4f}",
        ]
    if not metrics["training"]["module_training_mode"]:
        lines.append("note: the module has unseeded random ops (dropout); it was fine-tuned in inference mode")
    lines.append(f"wrote {result.export.path} {result.export.fingerprint}")
    return lines


def _format(split_metrics: dict[str, float]) -> str:
    m = split_metrics
    return f"examples {m['examples']}  loss {m['loss']:.4f}  accuracy {m['accuracy']:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; the last line printed is a JSON summary of the new version."""
    args = _parse_args(argv)
    hparams = Hyperparameters(
        args.epochs, args.steps, args.learning_rate, args.batch_size, args.seed, args.holdout_fraction
    )
    try:
        result = finetune(
            args.module,
            args.data,
            args.output_root,
            task=args.task,
            name=args.name,
            hparams=hparams,
            pack=args.pack,
            verbose=2,
        )
    except (FinetuneError, labeled.DataError, HandleError, ModuleError, export.ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(_summary_lines(result)))
    manifest = result.export.manifest
    summary = {key: manifest[key] for key in ("name", "version", "fingerprint", "parent")}
    print(json.dumps({"path": result.export.path, **summary, "metrics": result.metrics}, sort_keys=True))
    return 0
