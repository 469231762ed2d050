"""The command-line flags of `ResolveOptions`: the limits, `--allow-insecure-http` and `--verify-cache`."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable

from pipelines.hub.limits import DEFAULT_LIMITS, Limits, flag
from pipelines.hub.resolver import ResolveOptions

HELP: dict[str, str] = {
    "max_download_bytes": "most bytes downloaded for one module (an archive, or a gs:// / s3:// directory's objects)",
    "max_unpacked_bytes": "most bytes a module archive may unpack to",
    "max_archive_members": "most entries in a module archive (or objects in a gs:// / s3:// module directory)",
    "max_member_path_length": "most UTF-8 bytes in the path of one archive entry or object",
    "max_compression_ratio": "most unpacked bytes per compressed byte, checked once 64 MiB are unpacked",
    "allow_insecure_http": "send user:password@ credentials of an http:// module handle over plain http",
    "verify_cache": "re-hash a cached module's files before using it (default: compare their sizes and times)",
}
"""Help for each field of `Limits` and `ResolveOptions`, shared by every command that offers them."""


def _positive(kind: type[int] | type[float]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {kind.__name__}")
        return value

    return parse


def add_resolve_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of the limits, `--allow-insecure-http` and `--verify-cache` to `parser`."""
    group = parser.add_argument_group("module fetching and the module cache")
    for field in dataclasses.fields(Limits):
        default = getattr(DEFAULT_LIMITS, field.name)
        kind = float if field.name == "max_compression_ratio" else int
        group.add_argument(
            flag(field.name),
            type=_positive(kind),
            default=default,
            metavar=field.name.rpartition("_")[2].upper(),
            help=f"{HELP[field.name]} (default {default:,})",
        )
    group.add_argument(flag("allow_insecure_http"), action="store_true", help=HELP["allow_insecure_http"])
    group.add_argument(flag("verify_cache"), action="store_true", help=HELP["verify_cache"])


def options_from_args(args: argparse.Namespace) -> ResolveOptions:
    """The `ResolveOptions` that the flags of `add_resolve_flags` give."""
    limits = Limits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Limits)})
    return ResolveOptions(limits, allow_insecure_http=args.allow_insecure_http, verify_cache=args.verify_cache)


OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a TensorFlow op name looks like (`--allow-ops`, `allow_ops`)."""


def parse_op_names(text: str) -> tuple[str, ...]:
    """`--allow-ops`'s value: comma-separated op names."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    bad = [name for name in names if not OP_NAME.fullmatch(name)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a TensorFlow op name (letters, digits and '_')")
    return names


def add_op_gate_flags(parser: argparse.ArgumentParser) -> None:
    """`--allow-ops` and `--trust-module`, for every command that loads a module it may not trust."""
    parser.add_argument(
        "--allow-ops",
        type=parse_op_names,
        default=(),
        metavar="OP,...",
        help="TensorFlow ops the op gate lets the module run although they read or write files, list "
        "directories, run Python or reach the network; only for a module you trust",
    )
    parser.add_argument(
        "--trust-module", action="store_true", help="run the module whatever ops it holds (the manifest records them)"
    )
