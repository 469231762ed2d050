"""The run that wrote a table, from its manifest: module, counts, wall time, reuse and config, safe to show."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from pipelines.embedding import sinks
from pipelines.hub.redaction import redact
from pipelines.publish.source import SourceTable

# The run id starts with the run's start time (`sinks.new_run_id`).
_RUN_ID_TIME = "%Y%m%dT%H%M%SZ"


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What a table's manifest says about the run that wrote it.

    Attributes:
      run_id: the run.
      committed_at: when it committed (ISO 8601), or "".
      module: the module handle, redacted.
      module_name: its name and version from module.json, or "".
      fingerprint: the module's content fingerprint.
      precision: the module's precision ("float32", "bfloat16").
      signature: the signature called.
      output_key: the output stored.
      dimension: the vectors' dimension.
      counts: rows in / written / embedded / reused / failed, and the rest of the manifest's counts.
      wall_s: the run's wall time in seconds, or None when unknown.
      reuse: the reuse table (redacted), whether vectors were taken from it, and why not.
      config: the job's config (flat YAML keys), every string redacted.
      code_version: the code that wrote the table.
    """

    run_id: str
    committed_at: str
    module: str
    module_name: str
    fingerprint: str
    precision: str
    signature: str
    output_key: str
    dimension: int
    counts: dict[str, Any]
    wall_s: float | None
    reuse: dict[str, Any] | None
    config: dict[str, Any]
    code_version: dict[str, Any]


def run_facts(table: SourceTable, wall_s: float | None = None) -> RunFacts:
    """The run behind `table`; `wall_s` overrides the wall time the manifest's times give."""
    manifest = sinks.read_table_manifest(table.path) or {}
    meta = table.metadata
    reuse = manifest.get("reuse")
    if isinstance(reuse, dict):
        reuse = {**reuse, "table": redact(str(reuse.get("table", "")))}
    name = meta.get("module_name") or ""
    if name and meta.get("module_version") is not None:
        name = f"{name} version {meta['module_version']}"
    return RunFacts(
        run_id=table.run_id,
        committed_at=str(manifest.get("committed_at") or ""),
        module=redact(str(meta.get("module", ""))),
        module_name=name,
        fingerprint=str(meta.get("fingerprint", "")),
        precision=str(meta.get("module_precision") or "float32"),
        signature=str(meta.get("signature", "")),
        output_key=str(meta.get("output_key", "")),
        dimension=table.dimension,
        counts=dict(manifest.get("counts") or {}),
        wall_s=wall_s if wall_s is not None else _wall_s(table.run_id, manifest.get("committed_at")),
        reuse=reuse if isinstance(reuse, dict) else None,
        config=safe_config(table.config),
        code_version=dict(meta.get("code_version") or {}),
    )


def safe_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every string (and every string in a list) redacted: no credentials in a handle or path."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return {key: clean(value) for key, value in sorted(config.items())}


def _wall_s(run_id: str, committed_at: Any) -> float | None:
    """Seconds from the run's start (its id) to its commit, or None when either is unknown."""
    try:
        start = datetime.datetime.strptime(run_id.split("-", 1)[0], _RUN_ID_TIME).replace(tzinfo=datetime.UTC)
        end = datetime.datetime.fromisoformat(str(committed_at))
    except (ValueError, TypeError):
        return None
    return max((end - start).total_seconds(), 0.0)
