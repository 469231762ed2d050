"""The op gate: which TensorFlow ops a module may run, decided before it first runs."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable

from pipelines.hub import cache_files
from pipelines.hub.op_verdict import OpGateError, RefusedOp, Verdict


def _verdict_path(cache_dir: str, fingerprint: str) -> str:
    return os.path.join(cache_dir, "op-gate", f"{fingerprint}.json")


def _cached_scan(cache_dir: str | None, fingerprint: str | None) -> tuple[RefusedOp, ...] | None:
    if not (cache_dir and fingerprint):
        return None
    try:
        with open(_verdict_path(cache_dir, fingerprint), encoding="utf-8") as f:
            return tuple(RefusedOp(**r) for r in json.load(f)["refused"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_scan(cache_dir: str | None, fingerprint: str | None, refused: tuple[RefusedOp, ...]) -> None:
    if not (cache_dir and fingerprint):
        return
    path = _verdict_path(cache_dir, fingerprint)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"refused": [dataclasses.asdict(r) for r in refused]}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # the verdict is only a cache: the next run scans again


def check(
    module_dir: str,
    *,
    allow_ops: Iterable[str] = (),
    trust: bool = False,
    fingerprint: str | None = None,
    cache_dir: str | None = None,
) -> Verdict:
    """The gate's verdict on a module, raising when it refuses.

    The scan is cached under `<cache dir>/op-gate/<fingerprint>.json`, so a module seen before costs nothing.

    Args:
        module_dir: the local module directory.
        allow_ops: op names let through deliberately (`--allow-ops`).
        trust: let every op through (`--trust-module`); the verdict still lists what the module holds.
        fingerprint: the module's content fingerprint, the cache key; None caches nothing.
        cache_dir: where verdicts are cached (default: the module cache, `cache_files.cache_dir()`).

    Raises:
        OpGateError: naming each refused op and the function that holds it.
    """
    if fingerprint and cache_dir is None:
        cache_dir = cache_files.cache_dir()
    refused = _cached_scan(cache_dir, fingerprint)
    if refused is None:
        # TensorFlow reads the graphs: imported on a cache miss only, so a module seen before costs no import.
        from pipelines.hub import op_scan

        refused = op_scan.scan(module_dir)
        _store_scan(cache_dir, fingerprint, refused)
    verdict = Verdict(refused, tuple(sorted(set(allow_ops))), trust)
    if not verdict.passed:
        ops = ",".join(sorted({r.op for r in verdict.blocking}))
        raise OpGateError(
            f"the module at {module_dir} holds ops hub-embed does not run: "
            + "; ".join(str(r) for r in verdict.blocking)
            + f". Let them through with --allow-ops {ops} (or --trust-module) only if you trust this module."
        )
    return verdict
