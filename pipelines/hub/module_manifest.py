"""A module's `module.json` manifest (name, version, serving batch size, precision) and reading it."""

from __future__ import annotations

import json
import os
from typing import Any

MANIFEST_NAME = "module.json"


def read_module_manifest(path: str) -> dict[str, Any]:
    """Returns a module directory's `module.json` manifest, or {} if it has none (or an unreadable one)."""
    try:
        with open(os.path.join(path, MANIFEST_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_batch_size(value: Any) -> bool:
    """True for a usable rows-per-call value: a positive int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def recommended_batch_size(manifest: dict[str, Any]) -> int | None:
    """The rows per call a manifest recommends (`serving.batch_size`), or None."""
    serving = manifest.get("serving")
    size = serving.get("batch_size") if isinstance(serving, dict) else None
    return size if is_batch_size(size) else None


def compute_precision(manifest: dict[str, Any]) -> str | None:
    """What a module's heavy ops compute in (`precision.compute`, e.g. "bfloat16").

    Returns:
      The recorded precision; "float32" for a manifest without one (written
      before precisions were recorded); None when there is no manifest.
    """
    if not manifest:
        return None
    recorded = manifest.get("precision")
    compute = recorded.get("compute") if isinstance(recorded, dict) else None
    return compute if isinstance(compute, str) else "float32"
