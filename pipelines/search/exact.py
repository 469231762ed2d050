"""Exact search over a committed table: every row scored against every query, streamed one record batch at a time.

The parts the manifest names are read in batches of `BATCH_ROWS` rows; each batch's scores against all
queries are one matrix product, and each query keeps its best `k` rows so far. Memory holds one batch
and `k` rows per query, whatever the table's size. Ties are broken by id, so results are repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.publish.source import SourceTable
from pipelines.search.hits import Hit

BATCH_ROWS = 8192


def scores(metric: str, vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The `[rows, queries]` scores of `vectors` against `queries` (higher is closer; see `Hit.score`)."""
    if metric == "cosine":
        return _unit(vectors) @ _unit(queries).T
    if metric == "inner_product":
        return vectors @ queries.T
    squared = (vectors**2).sum(1)[:, None] - 2 * vectors @ queries.T + (queries**2).sum(1)[None, :]
    return -np.sqrt(np.maximum(squared, 0.0))


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class _Best:
    """One query's best `k` rows so far: scores, ids and passthrough values."""

    def __init__(self, k: int):
        self.k = k
        self.scores = np.zeros(0, np.float64)
        self.rows: list[tuple[str, tuple]] = []

    def offer(self, batch_scores: np.ndarray, ids: list[str], fields: list[tuple]) -> None:
        """Takes the batch's rows that beat the ones kept."""
        n = len(batch_scores)
        picked = np.argpartition(-batch_scores, self.k - 1)[: self.k] if n > self.k else np.arange(n)
        scores = np.concatenate([self.scores, batch_scores[picked]])
        rows = self.rows + [(ids[i], fields[i]) for i in picked]
        order = sorted(range(len(rows)), key=lambda j: (-scores[j], rows[j][0]))[: self.k]
        self.scores = scores[order]
        self.rows = [rows[j] for j in order]


def search_table(
    table: SourceTable, queries: np.ndarray, k: int, metric: str = "cosine", columns: Sequence[str] | None = None
) -> list[list[Hit]]:
    """The exact top `k` rows of `table` for each of `queries` (`[Q, D]`), best first.

    Args:
      table: a checked committed table (`pipelines.publish.source.open_table`).
      queries: the query vectors.
      k: rows per query.
      metric: "cosine", "inner_product" or "l2".
      columns: the passthrough columns to return (default: all of them).
    """
    columns = list(table.passthrough if columns is None else columns)
    queries = np.asarray(queries, np.float32)
    best = [_Best(k) for _ in range(len(queries))]
    for part in table.parts:
        with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for batch in pq.ParquetFile(f).iter_batches(BATCH_ROWS, columns=["id", "embedding", *columns]):
                vectors = _matrix(batch.column("embedding"))
                ids = batch.column("id").to_pylist()
                values = [batch.column(c).to_pylist() for c in columns]
                fields = list(zip(*values)) if values else [()] * len(ids)
                batch_scores = scores(metric, vectors, queries)
                for j, kept in enumerate(best):
                    kept.offer(batch_scores[:, j], ids, fields)
    return [
        [Hit(row_id, float(score), dict(zip(columns, values))) for score, (row_id, values) in zip(b.scores, b.rows)]
        for b in best
    ]


def _matrix(column: pa.Array) -> np.ndarray:
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(len(column), column.type.list_size)
