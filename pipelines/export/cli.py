"""`python -m pipelines.export`: export a SavedModel or model file as a verified, versioned TF Hub module.

`python -m pipelines.export --source PATH --root ROOT --name NAME [--version N]
[--batch-size N] [--pack] [--precision bfloat16 [--min-cosine C]
[--min-agreement A]] [--allow-ops OP,... | --trust-module]` prints the written
path and fingerprint (and the archive's path when packed); exit status 2 when
the export cannot be done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines import console
from pipelines.export import precision as reduced_precision
from pipelines.export.errors import ExportError
from pipelines.export.publish import export_module
from pipelines.hub.flags import add_op_gate_flags


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.export",
        description="Export a SavedModel or Keras model file as a verified, reusable TF Hub module version.",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="SavedModel directory (TF2, or TF1 Hub format: migrated), .keras (Keras 3) or .h5 (tf_keras) file",
    )
    parser.add_argument("--root", required=True, help="modules root; the module is written to ROOT/NAME/VERSION")
    parser.add_argument("--name", required=True, help="module name")
    parser.add_argument("--version", type=int, help="version to write (default: next free one)")
    parser.add_argument(
        "--batch-size", type=int, help="rows per call to recommend to embedding jobs (module.json serving.batch_size)"
    )
    parser.add_argument("--pack", action="store_true", help="also write ROOT/NAME/VERSION.tar.gz")
    add_precision_flags(parser)
    add_op_gate_flags(parser)
    console.add_verbose_flag(parser)
    return parser.parse_args(argv)


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """`--precision`, `--min-cosine` and `--min-agreement`, for every command that exports a module."""
    parser.add_argument(
        "--precision",
        default=reduced_precision.FLOAT32,
        help=f"precision of the heavy ops ({', '.join(reduced_precision.PRECISIONS)}; default: %(default)s); "
        "a reduced one is verified against the float32 source by cosine",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=reduced_precision.DEFAULT_MIN_COSINE,
        help="reduced precision: smallest cosine per output vector against the float32 source (default: %(default)s)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=reduced_precision.DEFAULT_MIN_AGREEMENT,
        help="reduced precision: smallest share of equal elements in each non-float output "
        "(ids, masks, an argmax) against the float32 source (default: %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints `<path> <fingerprint>` (and the archive path when packed).

    Args:
      argv: the arguments; None for `sys.argv[1:]`.

    Returns:
      0 when the version was published, 2 when the export cannot be done or
      fails verification (the reason is printed to stderr).
    """
    args = _parse_args(argv)
    try:
        result = export_module(
            args.source,
            args.root,
            args.name,
            version=args.version,
            batch_size=args.batch_size,
            pack=args.pack,
            precision=args.precision,
            min_cosine=args.min_cosine,
            min_agreement=args.min_agreement,
            allow_ops=args.allow_ops,
            trust_module=args.trust_module,
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result.path} {result.fingerprint}")
    if result.tar_path:
        print(result.tar_path)
    return 0
