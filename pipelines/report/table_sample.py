"""A deterministic sample of a committed table: the rows whose ids hash lowest (a bottom-k sample).

Two tables that hold the same ids sample the same ids, so a sample of one can be compared with a
sample of the other. The `id` column is read first over every part, the `rows` smallest
`sha256(id)` kept; then the other columns are read one row group at a time for the kept rows only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.publish.errors import PublishError
from pipelines.publish.source import SourceTable, open_table
from pipelines.report.errors import ReportError

DEFAULT_ROWS = 2000
_DIGEST = "S32"


@dataclasses.dataclass(frozen=True)
class TableSample:
    """Rows of a committed table, ordered by `sha256(id)`.

    Attributes:
      table: the checked table they come from.
      ids: the rows' ids.
      vectors: float32 `[n, d]`, in the order of `ids`.
      fields: every passthrough column of those rows, plus `content_hash`, each a list in the order of `ids`.
      sampled: True when the table holds more rows than the sample.
    """

    table: SourceTable
    ids: list[str]
    vectors: np.ndarray
    fields: dict[str, list]
    sampled: bool

    def __len__(self) -> int:
        return len(self.ids)


def id_digests(ids: list[str]) -> np.ndarray:
    """The `sha256` of each id's UTF-8 bytes, as a NumPy array of 32-byte strings (sortable)."""
    return np.array([hashlib.sha256(i.encode()).digest() for i in ids], dtype=_DIGEST)


def read_sample(
    table: str | SourceTable, *, rows: int = DEFAULT_ROWS, ids: Collection[str] | None = None
) -> TableSample:
    """Reads a deterministic sample of a committed table.

    Args:
      table: the table's directory (checked with `open_table`), or a table already opened.
      rows: the most rows to keep: the `rows` ids with the smallest `sha256(id)`.
      ids: read exactly these ids instead (those the table holds; `rows` is then ignored).

    Returns:
      The sample, ordered by `sha256(id)` (so two tables' samples of the same ids line up).

    Raises:
      ReportError: the table is missing, not committed, corrupt or holds per-token vectors, or `rows` < 1.
    """
    if ids is None and rows < 1:
        raise ReportError(f"a sample needs at least 1 row, not {rows}.")
    if isinstance(table, str):
        try:
            table = open_table(table)
        except PublishError as e:
            raise ReportError(str(e)) from None
    wanted = None if ids is None else frozenset(ids)
    picked_ids, locations = _pick(table, rows, wanted)
    columns = ["embedding", "content_hash", *table.passthrough]
    vectors = np.zeros((len(picked_ids), table.dimension), np.float32)
    fields: dict[str, list] = {name: [None] * len(picked_ids) for name in ("content_hash", *table.passthrough)}
    for part_index, part in enumerate(table.parts):
        in_part = np.flatnonzero(locations[:, 0] == part_index)
        if not len(in_part):
            continue
        with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            parquet = pq.ParquetFile(f)
            for group in np.unique(locations[in_part, 1]):
                indices = in_part[locations[in_part, 1] == group]
                taken = parquet.read_row_group(int(group), columns=columns).take(pa.array(locations[indices, 2]))
                vectors[indices] = _matrix(taken.column("embedding"))
                for name, values in fields.items():
                    for i, value in zip(indices.tolist(), taken.column(name).to_pylist()):
                        values[i] = value
    return TableSample(
        table=table, ids=picked_ids, vectors=vectors, fields=fields, sampled=table.rows > len(picked_ids)
    )


def _pick(table: SourceTable, rows: int, wanted: frozenset[str] | None) -> tuple[list[str], np.ndarray]:
    """The picked ids in digest order and their `[n, 3]` locations (part, row group, row); reads only `id`."""
    kept_digests = np.zeros(0, _DIGEST)
    kept_ids = np.zeros(0, object)
    kept_locations = np.zeros((0, 3), np.int64)
    for part_index, part in enumerate(table.parts):
        with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            parquet = pq.ParquetFile(f)
            for group in range(len(part.row_groups)):
                group_ids = parquet.read_row_group(group, columns=["id"]).column("id").to_pylist()
                rows_here = np.arange(len(group_ids))
                if wanted is not None:
                    rows_here = np.array([r for r, i in enumerate(group_ids) if i in wanted], np.int64)
                    group_ids = [group_ids[r] for r in rows_here]
                if not group_ids:
                    continue
                here = np.stack([np.full(len(rows_here), part_index), np.full(len(rows_here), group), rows_here], 1)
                digests = np.concatenate([kept_digests, id_digests(group_ids)])
                order = np.argsort(digests, kind="stable")
                if wanted is None:
                    order = order[:rows]
                kept_digests = digests[order]
                kept_ids = np.concatenate([kept_ids, np.array(group_ids, object)])[order]
                kept_locations = np.concatenate([kept_locations, here])[order]
    return kept_ids.tolist(), kept_locations


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(len(column), -1)
