"""`python -m pipelines.finetune`: fine-tune a module on labeled data, print the metrics and a JSON summary.

    python -m pipelines.finetune --module HANDLE --data PATH --task classification --output-root ROOT
        [--name NAME] [--epochs N | --steps N] [--learning-rate LR] [--batch-size N] [--seed N]
        [--holdout-fraction F] [--pack] [--allow-ops OP,... | --trust-module]

The last line printed is the JSON summary (path, name, version, fingerprint,
parent, metrics); exit status 2 when the run cannot start or its export fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pipelines import console, export
from pipelines.finetune import labeled
from pipelines.finetune.errors import FinetuneError
from pipelines.finetune.run import TASKS, FinetuneResult, finetune
from pipelines.finetune.training import DEFAULT_EPOCHS, Hyperparameters
from pipelines.hub.errors import HandleError, ModuleError
from pipelines.hub.flags import add_op_gate_flags


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
    add_op_gate_flags(parser)
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
            allow_ops=args.allow_ops,
            trust_module=args.trust_module,
        )
    except (FinetuneError, labeled.DataError, HandleError, ModuleError, export.ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(_summary_lines(result)))
    manifest = result.export.manifest
    summary = {key: manifest[key] for key in ("name", "version", "fingerprint", "parent")}
    print(json.dumps({"path": result.export.path, **summary, "metrics": result.metrics}, sort_keys=True))
    return 0
