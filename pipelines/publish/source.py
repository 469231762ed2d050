"""The committed table a publish reads: its manifest and parts checked up front, then read in chunks of row groups.

`open_table` reads the `_SUCCESS` manifest and the Parquet footer of every part it names (only those),
and refuses a table that is missing, uncommitted, corrupt or not publishable before anything is
written. `chunks` cuts the parts into runs of whole row groups, the unit a publish worker stages
exactly once; `read_chunk` reads one.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding import sinks
from pipelines.embedding.config import SUCCESS_FILE
from pipelines.hub.redaction import redact
from pipelines.publish.errors import PublishError

TABLE_COLUMNS = ("id", "embedding", "content_hash")
# Rows a publish worker stages in one transaction (whole row groups, so a little more or less).
CHUNK_ROWS = 16_384


@dataclasses.dataclass(frozen=True)
class TablePart:
    """One Parquet part the manifest names.

    Attributes:
      path: its full path.
      rows: its row count (the manifest's, checked against the footer).
      row_groups: the row count of each of its row groups.
    """

    path: str
    rows: int
    row_groups: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SourceTable:
    """A committed table, checked.

    Attributes:
      path: its directory.
      run_id: the run that committed it.
      metadata: its `hub_embed` metadata (module, fingerprint, signature, output key, dimension, ...).
      config: the embedding job's config as its manifest records it (flat YAML keys).
      passthrough: its passthrough columns, in order.
      parts: its parts.
    """

    path: str
    run_id: str
    metadata: dict[str, Any] = dataclasses.field(compare=False)
    config: dict[str, Any] = dataclasses.field(compare=False)
    passthrough: tuple[str, ...]
    parts: tuple[TablePart, ...]

    @property
    def rows(self) -> int:
        """The table's row count."""
        return sum(p.rows for p in self.parts)

    @property
    def dimension(self) -> int:
        """The vectors' dimension."""
        return int(self.metadata["dimension"])

    @property
    def display(self) -> str:
        """The table's path, safe to show."""
        return redact(self.path)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive row groups of one part: what one worker transaction stages.

    Attributes:
      path: the part's full path.
      first_row_group: the first row group's index.
      row_groups: how many row groups.
      rows: their rows.
    """

    path: str
    first_row_group: int
    row_groups: int
    rows: int

    @property
    def key(self) -> str:
        """A name for the chunk, unique within its table: `<part file>#<first row group>+<row groups>`."""
        return f"{posixpath.basename(self.path)}#{self.first_row_group}+{self.row_groups}"


def open_table(path: str) -> SourceTable:
    """Reads and checks a committed table's manifest and part footers.

    Args:
      path: the table's directory (local, gs://, s3://).

    Raises:
      PublishError: the table does not exist, is not committed, is corrupt, or holds per-token vectors.
    """
    where = f"table {redact(path)!r}"
    manifest = _manifest(path, where)
    metadata = manifest.get("table")
    if not isinstance(metadata, dict) or not metadata.get("fingerprint") or not metadata.get("dimension"):
        raise PublishError(f"{where}: its {SUCCESS_FILE} has no table metadata (module fingerprint, dimension).")
    if metadata.get("sequence"):
        raise PublishError(
            f"{where} holds per-token vectors (output {metadata.get('output_key')!r}); a collection holds one "
            "vector per id: publish a table of a pooled output."
        )
    parts, schemas = [], []
    for entry in manifest["files"]:
        part, schema = _check_part(FileSystems.join(path, entry["path"]), int(entry["rows"]), where)
        parts.append(part)
        schemas.append(schema)
    passthrough = _check_schemas(schemas, int(metadata["dimension"]), where)
    return SourceTable(
        path=path,
        run_id=str(manifest.get("run_id") or metadata.get("run_id")),
        metadata=metadata,
        config=manifest.get("config") or {},
        passthrough=passthrough,
        parts=tuple(parts),
    )


def _manifest(path: str, where: str) -> dict[str, Any]:
    try:
        manifest = sinks.read_table_manifest(path)
        if manifest is not None and (not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list)):
            raise ValueError("not a table manifest (no 'files' list)")
    except Exception as e:  # unreadable, not JSON, or the file system's own error (no bucket, no credentials)
        raise PublishError(f"{where}: its {SUCCESS_FILE} cannot be read: {type(e).__name__}: {e}") from None
    if manifest is None:
        if not FileSystems.exists(path) and not FileSystems.match([FileSystems.join(path, "*")])[0].metadata_list:
            raise PublishError(f"{where} does not exist.")
        raise PublishError(f"{where} has no {SUCCESS_FILE}: it is not a committed table (an interrupted run?).")
    return manifest


def _check_part(file: str, rows: int, where: str) -> tuple[TablePart, pa.Schema]:
    """One part's footer: it must exist, be Parquet, and hold the rows the manifest says."""
    try:
        with FileSystems.open(file, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except Exception as e:
        raise PublishError(f"{where}: part {redact(file)!r} cannot be read: {type(e).__name__}: {e}") from None
    if meta.num_rows != rows:
        raise PublishError(f"{where}: part {redact(file)!r} holds {meta.num_rows} rows, its manifest says {rows}.")
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return TablePart(file, rows, groups), schema


def _check_schemas(schemas: Sequence[pa.Schema], dimension: int, where: str) -> tuple[str, ...]:
    """The passthrough columns; PublishError unless every part has the table's columns and vector type."""
    if not schemas:
        raise PublishError(f"{where}: its manifest names no parts.")
    first = schemas[0]
    if tuple(first.names[:3]) != TABLE_COLUMNS:
        raise PublishError(
            f"{where}: its parts' columns are {first.names}; a publishable table starts with {list(TABLE_COLUMNS)} "
            "(a table written before content hashes existed: embed it again)."
        )
    vector = first.field("embedding").type
    if not pa.types.is_fixed_size_list(vector) or vector.list_size != dimension:
        raise PublishError(f"{where}: its embedding column is {vector}, not {dimension} float32 values per row.")
    for schema in schemas[1:]:
        if not schema.remove_metadata().equals(first.remove_metadata()):
            raise PublishError(f"{where}: its parts have different columns ({first.names} and {schema.names}).")
    return tuple(first.names[3:])


def chunks(table: SourceTable, rows_per_chunk: int | None = None) -> list[Chunk]:
    """The table's parts cut into runs of whole row groups of about `rows_per_chunk` (default `CHUNK_ROWS`) rows.

    Empty parts give no chunk.
    """
    rows_per_chunk = rows_per_chunk or CHUNK_ROWS
    out = []
    for part in table.parts:
        start, rows = 0, 0
        for i, n in enumerate(part.row_groups):
            rows += n
            if rows >= rows_per_chunk or i == len(part.row_groups) - 1:
                if rows:
                    out.append(Chunk(part.path, start, i + 1 - start, rows))
                start, rows = i + 1, 0
    return out


def read_chunk(chunk: Chunk, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The chunk's rows, one record batch per row group, with `columns` only."""
    with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        parquet = pq.ParquetFile(f)
        for group in range(chunk.first_row_group, chunk.first_row_group + chunk.row_groups):
            yield from parquet.read_row_group(group, columns=list(columns)).to_batches()


def read_rows(chunk: Chunk, columns: Sequence[str], rows: np.ndarray) -> pa.Table:
    """Some rows of a chunk, with `columns` only, reading only the row groups that hold them.

    Args:
      chunk: the chunk.
      columns: the columns to read.
      rows: the rows' positions within the chunk, ascending.

    Returns:
      The rows, in the order of `rows`.
    """
    with FileSystems.open(chunk.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        parquet = pq.ParquetFile(f)
        groups = range(chunk.first_row_group, chunk.first_row_group + chunk.row_groups)
        starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in groups])
        held = np.searchsorted(starts, rows, side="right") - 1  # the chunk's row group holding each row
        wanted = np.unique(held)
        table = pa.concat_tables(
            [parquet.read_row_group(chunk.first_row_group + int(g), columns=list(columns)) for g in wanted]
        )
    read_starts = np.cumsum([0] + [int(starts[g + 1] - starts[g]) for g in wanted])
    positions = rows - starts[held] + read_starts[np.searchsorted(wanted, held)]
    return table.take(pa.array(positions))
