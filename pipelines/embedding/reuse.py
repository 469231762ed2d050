"""Reuse tables: an earlier committed table whose vectors a run takes for the contents it already holds.

`plan` decides at launch whether the table's vectors suit this run (or fails the
run when the table is missing or corrupt); `ReadReusedVectors` reads them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding import sinks
from pipelines.embedding.config import SUCCESS_FILE, ConfigError
from pipelines.hub.redaction import redact

# Metadata that must be equal for vectors to be interchangeable (the `hub_embed` schema metadata).
COMPATIBLE_KEYS = ("fingerprint", "signature", "output_key", "dimension", "sequence", "token_trim", "content_hash")
_COLUMNS = ["content_hash", "embedding"]
_LOG = logging.getLogger("hub_embed")


@dataclasses.dataclass(frozen=True)
class ReusePlan:
    """What a run takes from its reuse table.

    Attributes:
      table: the reuse table's directory (credentials removed when shown).
      run_id: the run that committed it.
      used: whether its vectors are read.
      reason: why not, when `used` is False.
      files: full paths of its parts (empty when not used).
      rows: its row count.
    """

    table: str
    run_id: str | None
    used: bool
    reason: str | None = None
    files: tuple[str, ...] = ()
    rows: int = 0

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's `reuse` entry."""
        return {
            "table": redact(self.table),
            "run_id": self.run_id,
            "used": self.used,
            "reason": self.reason,
            "rows": self.rows,
        }


def plan(path: str, metadata: Mapping[str, Any]) -> ReusePlan:
    """Checks the reuse table at `path` against this run's table metadata.

    Args:
      path: the reuse table's directory (local, gs://, s3://).
      metadata: this run's `hub_embed` metadata (see `pipeline.prepare`).

    Returns:
      The plan; `used` is False (with a logged reason) when its vectors do not
      suit this run.

    Raises:
      ConfigError: the table does not exist, is not committed, or is corrupt.
    """
    manifest = _committed_manifest(path)
    table = manifest.get("table") or {}
    named = [(FileSystems.join(path, f["path"]), int(f["rows"])) for f in manifest.get("files", [])]
    schemas = [_check_part(path, file, rows) for file, rows in named]
    rows = sum(n for _, n in named)
    reason = _incompatibility(table, metadata, schemas)
    if reason:
        _LOG.warning("Reusing nothing from %s: %s. Every row is embedded.", redact(path), reason)
        return ReusePlan(path, manifest.get("run_id"), used=False, reason=reason, rows=rows)
    _LOG.info("Reusing vectors from %s (run %s, %d rows).", redact(path), manifest.get("run_id"), rows)
    return ReusePlan(path, manifest.get("run_id"), used=True, files=tuple(f for f, _ in named), rows=rows)


def _committed_manifest(path: str) -> dict[str, Any]:
    """The reuse table's `_SUCCESS` manifest; ConfigError when it is missing, unreadable or not a table's."""
    where = f"reuse table {redact(path)!r}"
    try:
        manifest = sinks.read_table_manifest(path)
        if manifest is not None and (not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list)):
            raise ValueError("not a table manifest (no 'files' list)")
    except Exception as e:  # unreadable, not JSON, or the backend's own error (bucket missing, no credentials)
        raise ConfigError(f"{where}: its {SUCCESS_FILE} cannot be read: {type(e).__name__}: {e}") from None
    if manifest is None:
        if not FileSystems.exists(path) and not FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list:
            raise ConfigError(f"{where} does not exist.")
        raise ConfigError(f"{where} has no {SUCCESS_FILE}: it is not a committed table (an interrupted run?).")
    return manifest


def _check_part(table: str, file: str, rows: int) -> pa.Schema:
    """Reads one part's Parquet footer: it must exist, be Parquet and hold the rows the manifest says."""
    try:
        with FileSystems.open(file, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except Exception as e:
        raise ConfigError(
            f"reuse table {redact(table)!r}: part {redact(file)!r} cannot be read: {type(e).__name__}: {e}"
        ) from None
    if meta.num_rows != rows:
        raise ConfigError(
            f"reuse table {redact(table)!r}: part {redact(file)!r} holds {meta.num_rows} rows, its manifest says {rows}."
        )
    return schema


def _incompatibility(table: Mapping[str, Any], metadata: Mapping[str, Any], schemas: list[pa.Schema]) -> str | None:
    """Why the reuse table's vectors do not suit this run, or None when they do."""
    if any("content_hash" not in schema.names for schema in schemas) or "content_hash" not in table:
        return "it was written before tables had a content_hash column, so its rows cannot be matched"
    differ = [k for k in COMPATIBLE_KEYS if table.get(k) != metadata.get(k)]
    if differ:
        shown = ", ".join(f"{k} {table.get(k)!r} (this run: {metadata.get(k)!r})" for k in differ)
        return f"it was written with another {', '.join(differ)}: {shown}"
    return None


def _vectors(column: pa.Array, sequence: bool) -> list[bytes]:
    """The rows of an `embedding` column as the bytes of float32 `[D]` (or `[T, D]` per token) arrays.

    Bytes, not arrays: Beam's coders copy bytes, but pickle arrays, and every
    reused vector crosses the content join's shuffle.
    """
    if not sequence:
        dim = column.type.list_size
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return [flat[i * dim : (i + 1) * dim].tobytes() for i in range(len(column))]
    dim = column.type.value_type.list_size
    flat = column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    offsets = column.offsets.to_numpy()
    offsets = offsets - offsets[0]  # `flatten` starts at the array's first row, offsets need not
    return [flat[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(column))]


class _ReadVectors(beam.DoFn):
    """One part of the reuse table -> `(content_hash, vector)`, each content once per part."""

    def __init__(self, sequence: bool):
        self._sequence = sequence

    def process(self, file: str) -> Iterator[tuple[str, bytes]]:
        seen: set[str] = set()
        with FileSystems.open(file, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=_COLUMNS):
                hashes = batch.column(0).to_pylist()
                for content_hash, vector in zip(hashes, _vectors(batch.column(1), self._sequence)):
                    if content_hash not in seen:
                        seen.add(content_hash)
                        yield content_hash, vector


class ReadReusedVectors(beam.PTransform):
    """The reuse table's `(content_hash, vector bytes)` pairs (none when the plan does not use it)."""

    def __init__(self, reuse: ReusePlan | None, sequence: bool):
        super().__init__()
        self._files = list(reuse.files) if reuse and reuse.used else []
        self._sequence = sequence

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return pbegin | "Parts" >> beam.Create(self._files) | "Read" >> beam.ParDo(_ReadVectors(self._sequence))
