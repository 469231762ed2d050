"""One fine-tuning run: a module and labeled data in, the fine-tuned encoder exported as the module's next version.

Design: docs/design/orchestration.md (fine-tuning).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pipelines import export
from pipelines.export import precision as reduced_precision
from pipelines.export.gating import check_ops
from pipelines.finetune import labeled
from pipelines.finetune.errors import FinetuneError
from pipelines.finetune.trainable import module_input, unseeded_random_ops
from pipelines.finetune.training import (
    DEFAULT_HYPERPARAMETERS,
    PROBE_L2,
    Hyperparameters,
    build_classifier,
    embed,
    head_metrics,
    probe_accuracy,
    set_seed,
    train,
)
from pipelines.hub import description, loading, module_dirs, module_info, registry, resolver
from pipelines.hub.module_manifest import read_module_manifest
from pipelines.hub.redaction import redact

TASKS = ("classification",)
VERIFY_EXAMPLES = 8


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


def finetune(
    module: str,
    data: str,
    output_root: str,
    *,
    task: str = "classification",
    name: str | None = None,
    hparams: Hyperparameters = DEFAULT_HYPERPARAMETERS,
    pack: bool = False,
    verbose: int = 0,
    allow_ops: Iterable[str] = (),
    trust_module: bool = False,
) -> FinetuneResult:
    """Fine-tunes a module on labeled data and exports the encoder as the next version.

    The module is loaded trainable (a TF1 Hub-format module is first migrated
    by the export tool into a scratch directory); the data is read and checked
    before any training; encoder and a dense softmax head train together on a
    stratified train split; the encoder alone is exported, verified against
    the in-memory encoder, with every signature of the parent. The new version
    is the parent's version + 1, or the next free one when `output_root`
    already holds a higher version of `name`. Runs are deterministic for a
    given seed on CPU (op determinism is enabled process-wide).

    Args:
      module: handle of a reusable, trainable module (any `registry.resolve` form).
      data: labeled data (see `pipelines.finetune.labeled`); its kind follows the module's input.
      output_root: modules root; the new version is `<output_root>/<name>/<next version>`.
      task: only "classification".
      name: module name to publish under (default: the parent's manifest name).
      hparams: training settings.
      pack: also write `<output_root>/<name>/<version>.tar.gz`.
      verbose: tf_keras `fit` verbosity (0 silent, 2 one line per epoch).
      allow_ops: ops the op gate lets the parent (and so the fine-tuned
        version, which holds the same graph) run although they read or write
        files, list directories, run Python or reach the network.
      trust_module: let every op of the parent through the op gate.

    Returns:
      The published version, its metrics and the in-memory fine-tuned encoder.

    The parent passes the op gate before it is loaded (its verdict is cached
    under its fingerprint).

    Raises:
      HandleError, ModuleError: the module cannot be resolved or loaded.
      FinetuneError: unsupported task or module, bad hyperparameters, no module
        name, or a parent holding ops the op gate refuses (naming each op and
        the function that holds it).
      labeled.DataError: bad data (raised before training).
      export.ExportError: the export failed verification; nothing was published.
    """
    if task not in TASKS:
        raise FinetuneError(f"Unknown task {task!r}; supported: {', '.join(TASKS)}.")
    resolved = registry.resolve(module)
    gate = _Gate(tuple(allow_ops), trust_module)
    try:
        check_ops(resolved.path, gate.allow_ops, gate.trust, resolved.fingerprint)
    except export.ExportError as e:
        raise FinetuneError(str(e)) from None
    if not (name or read_module_manifest(resolved.path).get("name")):
        raise FinetuneError(f"Module {redact(module)!r} has no name in a module.json; pass a name.")
    with tempfile.TemporaryDirectory(prefix="hub-embed-tf1-migration-") as scratch:
        trainable_path, migration = _trainable_module(resolved, scratch, gate)
        return _finetune(
            module, resolved, trainable_path, migration, data, output_root, task, name, hparams, pack, verbose, gate
        )


@dataclasses.dataclass(frozen=True)
class _Gate:
    """What the op gate lets through, for the parent and the versions exported from it."""

    allow_ops: tuple[str, ...] = ()
    trust: bool = False


def _trainable_module(
    resolved: resolver.ResolvedModule, scratch: str, gate: _Gate
) -> tuple[str, dict[str, Any] | None]:
    """The module directory to train: the module itself, or the migration of a TF1 Hub-format module.

    Returns:
      (path, what the migration's module.json records about its TF1 source, or None).
    """
    if module_dirs.module_format(resolved.path) != "tf1_hub":
        return resolved.path, None
    migrated = export.export_module(
        resolved.path,
        scratch,
        "tf1-migration",
        source_description=f"TF1 Hub module {redact(resolved.handle)}",
        allow_ops=gate.allow_ops,
        trust_module=gate.trust,
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
    gate: _Gate,
) -> FinetuneResult:
    """`finetune` once the module to train is at `trainable_path` (see `_trainable_module`)."""
    # TensorFlow (Hub) is imported when a run starts, to keep it out of this module's import.
    import tensorflow_hub as hub

    loaded = loading.load(trainable_path)
    info = description.describe_loaded(loaded, resolved)
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
        allow_ops=gate.allow_ops,
        trust_module=gate.trust,
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
    import tensorflow as tf  # when a run calls it, not at this module's import

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
        train_x, holdout_x = embeddings["train"], embeddings["holdout"]
        return probe_accuracy(train_x, labels["train"], holdout_x, labels["holdout"], num_classes)

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
