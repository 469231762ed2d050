"""A table's module lineage: what the table records of its module, and the parent and metrics its module.json adds."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pipelines.embedding.paths import is_local
from pipelines.hub.module_manifest import MANIFEST_NAME, read_module_manifest
from pipelines.hub.redaction import redact
from pipelines.publish.source import SourceTable


@dataclasses.dataclass(frozen=True)
class ModuleLineage:
    """Where a table's vectors come from.

    Attributes:
      handle: the module handle the table was embedded with, credentials redacted.
      name: the module's name, as the table records it (None for a module without a module.json).
      version: its version, likewise.
      fingerprint: its content fingerprint.
      parent: the version it was fine-tuned or derived from (name, version, fingerprint, handle), from its
        module.json; None when it has none or the module.json is not available.
      metrics: the release's validation metrics from its module.json (`extra.finetune.metrics`), flattened to
        `(dotted name, value)` pairs; empty when there are none.
      unavailable: why the module.json could not be read, or None when it was.
    """

    handle: str
    name: str | None
    version: int | None
    fingerprint: str
    parent: Mapping[str, Any] | None
    metrics: tuple[tuple[str, float], ...]
    unavailable: str | None


def module_lineage(table: SourceTable) -> ModuleLineage:
    """The lineage of `table`'s module, its module.json read when the handle is a local directory.

    A module.json is used only when it is the one of the module the table was embedded with (same
    fingerprint): a handle such as `<root>/<name>/latest` may point at a newer version by now.
    """
    meta = table.metadata
    handle = str(meta.get("module") or "")
    fingerprint = str(meta.get("fingerprint") or "")
    manifest, unavailable = _module_json(handle, fingerprint)
    parent = manifest.get("parent") if isinstance(manifest.get("parent"), Mapping) else None
    finetune = (manifest.get("extra") or {}).get("finetune") if isinstance(manifest.get("extra"), Mapping) else None
    metrics = finetune.get("metrics") if isinstance(finetune, Mapping) else None
    return ModuleLineage(
        handle=redact(handle),
        name=meta.get("module_name"),
        version=meta.get("module_version"),
        fingerprint=fingerprint,
        parent={k: (redact(v) if k == "handle" and isinstance(v, str) else v) for k, v in parent.items()}
        if parent
        else None,
        metrics=tuple(_flatten(metrics)) if isinstance(metrics, Mapping) else (),
        unavailable=unavailable,
    )


def _module_json(handle: str, fingerprint: str) -> tuple[dict[str, Any], str | None]:
    """The module's module.json and None, or {} and why it is not available."""
    if not handle or not is_local(handle) or handle.endswith((".tar.gz", ".tgz")):
        return {}, "not available: the module is not a local directory"
    path = urllib.parse.urlsplit(handle).path if handle.startswith("file:") else handle
    if not os.path.isdir(path):
        return {}, "not available: the module directory no longer exists"
    manifest = read_module_manifest(path)
    if not manifest:
        return {}, f"not available: the module has no {MANIFEST_NAME}"
    if manifest.get("fingerprint") != fingerprint:
        return {}, (
            f"not available: the {MANIFEST_NAME} at that handle is now of another module "
            f"(version {manifest.get('version')}, fingerprint {manifest.get('fingerprint')})"
        )
    return manifest, None


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of nested mappings as `(dotted.name, value)` pairs, in the mappings' order."""
    out: list[tuple[str, float]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((name, float(value)))
    return out
