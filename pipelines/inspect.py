"""`python -m pipelines.inspect HANDLE [--json]`: what a module is and offers.

Prints the module's fingerprint, format (TF2 SavedModel or TF1 Hub format),
whether it is reusable/trainable, and a table of its signatures with their
inputs and outputs (for a per-token output: how an embedding job cuts it to
each row's tokens, see `pipelines.embedding.token_trim`), and the op gate's
verdict, reached before the module is loaded. Exits with status 2 and a one-line
message when the handle cannot be resolved, fetching it goes over one of its
limits (`--max-download-bytes` and the like), the op gate refuses it, or it
cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines import console
from pipelines.embedding import token_trim
from pipelines.hub import op_gate, registry
from pipelines.hub.description import describe_resolved
from pipelines.hub.errors import HandleError, ModuleError
from pipelines.hub.flags import add_op_gate_flags, add_resolve_flags, options_from_args
from pipelines.hub.module_info import ModuleInfo, SignatureInfo
from pipelines.hub.module_manifest import read_module_manifest
from pipelines.hub.op_verdict import Verdict
from pipelines.hub.redaction import redact

FORMAT_NAMES = {"tf2": "TF2 SavedModel", "tf1_hub": "TF1 Hub format"}


def _shape(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def per_token_rows(sig: SignatureInfo, output: str) -> str:
    """For a per-token output ([N, T, D] float): how an embedding job cuts it to each row's tokens."""
    tensor = sig.output(output)
    if len(tensor.shape) != 3 or not tensor.dtype.startswith("float"):
        return ""
    image = any(t.dtype == "float32" and len(t.shape) == 4 for t in sig.inputs)
    trim = token_trim.find(sig, output, image)
    return trim.describe() if trim else "refused by embed: no mask or length output (see --output-length-key)"


def precision_line(info: ModuleInfo) -> str:
    """The precision its heavy ops compute in, with the parity its manifest measured on export."""
    if info.precision == "float32":
        return "float32"
    verification = read_module_manifest(info.path).get("verification") or {}
    cosine = verification.get("min_cosine")
    measured = f"; min cosine {cosine:.6f} to its source on export" if isinstance(cosine, float) else ""
    return f"{info.precision} (matmuls and convolutions; outputs float32{measured})"


def render_text(info: ModuleInfo, verdict: Verdict | None = None) -> str:
    """Renders a module description (and the op gate's verdict, when given) as a human-readable report."""
    lines = [
        f"handle:       {redact(info.handle)}",
        f"path:         {info.path}",
        f"fingerprint:  {info.fingerprint}",
        f"format:       {FORMAT_NAMES.get(info.format, info.format)}",
        f"reusable:     {'yes' if info.reusable else 'no'}",
        f"trainable:    {'yes' if info.trainable else 'no'} "
        f"({info.num_trainable_variables} trainable of {info.num_variables} variables)",
    ]
    if info.format == "tf1_hub" and not info.trainable:
        lines.append(
            "              (TF1 Hub format: `python -m pipelines.export --source PATH --root ROOT --name NAME` "
            "migrates it to a trainable TF2 module)"
        )
    if verdict is not None:
        lines.append(f"op gate:      {verdict.summary()}")
    if info.name is not None:
        lines.append(f"name/version: {info.name}/{info.version}")
    if info.precision is not None:
        lines.append(f"precision:    {precision_line(info)}")
    if info.recommended_batch_size is not None:
        lines.append(f"batch size:   {info.recommended_batch_size} rows per call (recommended by its module.json)")
    rows = [("signature", "kind", "name", "dtype", "shape", "per row")]
    for sig_name, sig in sorted(info.signatures.items()):
        for kind, tensors in (("input", sig.inputs), ("output", sig.outputs)):
            for tensor in tensors:
                per_row = per_token_rows(sig, tensor.name) if kind == "output" else ""
                rows.append((sig_name, kind, tensor.name, tensor.dtype, _shape(tensor.shape), per_row))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines.append("")
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the inspect command; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("handle", help=f"module handle: {registry.SUPPORTED_FORMS}")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    add_resolve_flags(parser)
    add_op_gate_flags(parser)
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        resolved = registry.resolve(args.handle, options=options_from_args(args))
        verdict = op_gate.check(
            resolved.path, allow_ops=args.allow_ops, trust=args.trust_module, fingerprint=resolved.fingerprint
        )
        info = describe_resolved(resolved)
    except (HandleError, ModuleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**info.to_dict(), "op_gate": verdict.as_manifest()}, indent=2, sort_keys=True))
    else:
        print(render_text(info, verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
