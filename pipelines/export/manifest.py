"""A module version's `module.json`: its identity, signatures, source, parent, lineage and verification."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

from pipelines.export.sources import PreparedSource
from pipelines.hub import module_info, registry
from pipelines.hub.module_manifest import MANIFEST_NAME, read_module_manifest
from pipelines.hub.redaction import redact
from pipelines.version import code_version


@dataclasses.dataclass(frozen=True)
class ModuleRef:
    """Identifies a module version, e.g. the parent of a fine-tuned export.

    Attributes:
      handle: the handle it was resolved from (credentials are redacted when written).
      fingerprint: content fingerprint of the module's files.
      name: module name from its manifest, if any.
      version: module version from its manifest, if any.
    """

    handle: str
    fingerprint: str
    name: str | None = None
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `parent` entry: name, version, fingerprint and the handle, credentials redacted."""
        return {
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "handle": redact(self.handle),
        }


def module_ref(handle: str) -> ModuleRef:
    """Resolves a module handle and reads its identity (for `export_module(parent=...)`).

    Raises:
      HandleError: the handle cannot be resolved.
    """
    resolved = registry.resolve(handle)
    manifest = read_module_manifest(resolved.path)
    return ModuleRef(handle, resolved.fingerprint, manifest.get("name"), manifest.get("version"))


def _redact_urls(value: Any) -> Any:
    """Drops credentials from every URL-like string in a JSON-like value."""
    if isinstance(value, str):
        return redact(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {str(k): _redact_urls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_urls(v) for v in value]
    return value


def build_manifest(
    name: str,
    version: int,
    info: module_info.ModuleInfo,
    prepared: PreparedSource,
    parent: ModuleRef | None,
    verification: Mapping[str, Any],
    compute: Mapping[str, Any],
    extra: Mapping[str, Any] | None,
    batch_size: int | None,
    op_gate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The contents of a version's `module.json` (see `pipelines.export.export_module` for its keys).

    Args:
      name: module name.
      version: version number.
      info: the written module as `description.describe_loaded` describes it.
      prepared: the source it was written from.
      parent: the module it derives from, if any.
      verification: how it was verified against the source, and the result.
      compute: its `precision` entry.
      extra: caller data stored under `extra`; credentials in URLs are redacted.
      batch_size: the rows per call it is best called with, if known.
      op_gate: the op gate's verdict on the written module (`Verdict.as_manifest()`).
    """
    return {
        "name": name,
        "version": version,
        "fingerprint": info.fingerprint,
        "format": info.format,
        "reusable": info.reusable,
        "num_variables": info.num_variables,
        "num_trainable_variables": info.num_trainable_variables,
        "signatures": {k: v.to_dict() for k, v in sorted(info.signatures.items())},
        "source": {"kind": prepared.kind, "description": redact(prepared.description), **prepared.source_info},
        "parent": parent.to_dict() if parent else None,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "precision": dict(compute),
        "verification": dict(verification),
        "serving": {"batch_size": batch_size} if batch_size else {},
        "op_gate": dict(op_gate or {}),
        "extra": _redact_urls(dict(extra or {})),
    }


def write_manifest(module_dir: str, manifest: Mapping[str, Any]) -> None:
    """Writes `manifest` as `<module_dir>/module.json` (sorted, indented JSON) and syncs it to disk."""
    with open(os.path.join(module_dir, MANIFEST_NAME), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
