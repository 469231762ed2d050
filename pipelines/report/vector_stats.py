"""One pass over every vector of a table: the norms' distribution, zero and non-finite vectors, exact duplicates."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.publish.source import SourceTable

BATCH_ROWS = 8192
BINS = 40
FLAGGED_EXAMPLES = 10
# Called with each record batch read and its vectors (`[rows, d]` float32), e.g. to search neighbours in the same pass.
BatchVisitor = Callable[[pa.RecordBatch, np.ndarray], None]


@dataclasses.dataclass(frozen=True)
class VectorStats:
    """What every vector of a table looks like.

    Attributes:
      rows: the rows read.
      dimension: the vectors' dimension.
      norm_bins: the histogram's `BINS + 1` edges over the finite norms.
      norm_counts: rows per bin.
      norm_min, norm_median, norm_max: of the finite norms (0 for an empty table).
      zero: rows whose vector is all zeros; zero_ids: the first few of them.
      non_finite: rows whose vector holds NaN or an infinity; non_finite_ids: the first few of them.
      distinct_contents: distinct content hashes; `rows - distinct_contents` rows repeat another row's content.
    """

    rows: int
    dimension: int
    norm_bins: np.ndarray
    norm_counts: np.ndarray
    norm_min: float
    norm_median: float
    norm_max: float
    zero: int
    zero_ids: tuple[str, ...]
    non_finite: int
    non_finite_ids: tuple[str, ...]
    distinct_contents: int

    @property
    def exact_duplicates(self) -> int:
        """Rows whose content (content hash) another row of the table already has."""
        return self.rows - self.distinct_contents


def vector_stats(table: SourceTable, visit: BatchVisitor | None = None, columns: Sequence[str] = ()) -> VectorStats:
    """Reads every row's vector and content hash once, one record batch at a time.

    Args:
      table: the table.
      visit: called with every batch and its vectors as well.
      columns: more columns to read into the batches `visit` sees.
    """
    read = list(dict.fromkeys(["id", "embedding", "content_hash", *columns]))
    norms: list[np.ndarray] = []
    zero_ids: list[str] = []
    bad_ids: list[str] = []
    zero = bad = 0
    hashes: list[pa.Array] = []
    for part in table.parts:
        with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for batch in pq.ParquetFile(f).iter_batches(BATCH_ROWS, columns=read):
                column = batch.column("embedding")
                vectors = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32)
                vectors = vectors.reshape(len(column), table.dimension)
                if visit is not None:
                    visit(batch, vectors)
                finite = np.isfinite(vectors).all(axis=1)
                is_zero = finite & ~vectors.any(axis=1)
                if not finite.all() or is_zero.any():
                    ids = batch.column("id").to_pylist()
                    bad_ids += [ids[i] for i in np.flatnonzero(~finite)][: FLAGGED_EXAMPLES - len(bad_ids)]
                    zero_ids += [ids[i] for i in np.flatnonzero(is_zero)][: FLAGGED_EXAMPLES - len(zero_ids)]
                bad += int((~finite).sum())
                zero += int(is_zero.sum())
                kept = vectors if finite.all() else vectors[finite]
                norms.append(np.sqrt(np.einsum("ij,ij->i", kept, kept, dtype=np.float64)))
                hashes.append(pc.unique(batch.column("content_hash")))
    all_norms = np.concatenate(norms) if norms else np.zeros(0)
    distinct = len(pc.unique(pa.chunked_array(hashes, pa.string()))) if hashes else 0
    low, high = (float(all_norms.min()), float(all_norms.max())) if len(all_norms) else (0.0, 0.0)
    counts, edges = np.histogram(all_norms.astype(np.float64), bins=BINS, range=_histogram_range(low, high))
    return VectorStats(
        rows=table.rows,
        dimension=table.dimension,
        norm_bins=edges,
        norm_counts=counts,
        norm_min=low,
        norm_median=float(np.median(all_norms)) if len(all_norms) else 0.0,
        norm_max=high,
        zero=zero,
        zero_ids=tuple(zero_ids),
        non_finite=bad,
        non_finite_ids=tuple(bad_ids),
        distinct_contents=distinct,
    )


def _histogram_range(low: float, high: float) -> tuple[float, float]:
    """The histogram's range: the norms' own, widened a little when they (nearly) all agree (unit vectors)."""
    scale = max(abs(high), 1.0)
    if high - low < 1e-4 * scale:
        return low - 1e-3 * scale, high + 1e-3 * scale
    return low, high
