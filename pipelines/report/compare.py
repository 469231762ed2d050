"""Two committed tables of the same rows compared: how far each row's nearest neighbours moved between them.

The rows are a bottom-k sample of the table's ids (`table_sample.read_sample`) that the other table holds too.
Each table's neighbours are found within its own vector space over those rows, so tables of different
modules and dimensions compare as well as two versions of one module.
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from pipelines.publish.source import SourceTable
from pipelines.report.errors import ReportError
from pipelines.report.lineage import ModuleLineage, module_lineage
from pipelines.report.neighbour_overlap import nearest_neighbours, overlap
from pipelines.report.table_sample import TableSample, read_sample
from pipelines.report.texts import excerpt, row_texts

DEFAULT_K = 10
CHANGED_ROWS = 10
EXCERPT_CHARS = 120


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """One of a row's nearest neighbours.

    Attributes:
      id: its id.
      excerpt: the start of its text (None when the table keeps no text column).
      in_both: whether it is among the row's neighbours in both tables.
    """

    id: str
    excerpt: str | None
    in_both: bool


@dataclasses.dataclass(frozen=True)
class ChangedRow:
    """A row whose neighbourhood changed, with its neighbours in each table.

    Attributes:
      id: its id.
      excerpt: the start of its text in this table (None without a text column).
      overlap: the share of its neighbours the two tables agree on.
      neighbours: its nearest neighbours in this table, closest first.
      other_neighbours: its nearest neighbours in the other table, closest first.
    """

    id: str
    excerpt: str | None
    overlap: float
    neighbours: tuple[Neighbour, ...]
    other_neighbours: tuple[Neighbour, ...]


@dataclasses.dataclass(frozen=True)
class TableComparison:
    """A table compared with another: per-row neighbour overlap, the rows that changed most, both modules' lineage.

    Attributes:
      table: this table's path, safe to show.
      other: the other table's path, safe to show.
      k: neighbours per row.
      sampled: rows of this table sampled (bottom-k by `sha256(id)`).
      table_rows: this table's row count.
      other_rows: the other table's row count.
      ids: the sampled ids that the other table holds too: the rows compared.
      overlap: per row of `ids`, the share of its `k` nearest neighbours (among `ids`) the tables agree on.
      changed: the rows whose neighbourhoods changed most, lowest overlap first.
      texts_shown: whether the rows' texts could be shown (a text column, or a txt input still readable).
      dimension: this table's vector dimension.
      other_dimension: the other table's.
      lineage: this table's module lineage.
      other_lineage: the other table's.
    """

    table: str
    other: str
    k: int
    sampled: int
    table_rows: int
    other_rows: int
    ids: tuple[str, ...]
    overlap: tuple[float, ...]
    changed: tuple[ChangedRow, ...]
    texts_shown: bool
    dimension: int
    other_dimension: int
    lineage: ModuleLineage
    other_lineage: ModuleLineage

    @property
    def mean_overlap(self) -> float:
        """The mean overlap over the rows compared."""
        return statistics.fmean(self.overlap)

    @property
    def median_overlap(self) -> float:
        """The median overlap over the rows compared."""
        return statistics.median(self.overlap)

    def share(self, value: float) -> float:
        """The share of rows compared whose overlap is exactly `value` (e.g. 1.0: unchanged neighbourhoods)."""
        return sum(1 for o in self.overlap if o == value) / len(self.overlap)


def compare_tables(
    table: str | SourceTable, other: str | SourceTable, *, k: int = DEFAULT_K, rows: int = 2000
) -> TableComparison:
    """Compares `table` with `other` over the sampled ids they both hold.

    Args:
      table: this table (its directory, or a table already opened): its sample picks the rows.
      other: the table to compare with, e.g. the one embedded with the previous module version.
      k: neighbours per row.
      rows: the most rows of `table` to sample.

    Raises:
      ReportError: either table is missing, not committed, corrupt or per-token, `k` or `rows` is out of
        range, or the tables share fewer than `k + 1` of the sampled ids.
    """
    if k < 1:
        raise ReportError(f"--compare needs k >= 1 neighbours, not {k}.")
    if rows < k + 1:
        raise ReportError(f"a comparison of {k} neighbours needs a sample of at least {k + 1} rows, not {rows}.")
    mine = read_sample(table, rows=rows)
    theirs = read_sample(other, ids=mine.ids)
    if len(theirs.ids) < k + 1:
        raise ReportError(
            f"tables {mine.table.display!r} and {theirs.table.display!r} share {len(theirs.ids)} of the "
            f"{len(mine.ids)} ids sampled; comparing {k} neighbours needs at least {k + 1}."
        )
    common = theirs.ids  # both samples are in sha256(id) order, so these line up with their rows in `mine`
    position = {row_id: i for i, row_id in enumerate(mine.ids)}
    rows_here = np.array([position[i] for i in common])
    vectors, other_vectors = mine.vectors[rows_here], theirs.vectors
    near = nearest_neighbours(common, vectors, k)
    other_near = nearest_neighbours(common, other_vectors, k)
    shared = overlap(near, other_near).tolist()
    worst = sorted(range(len(common)), key=lambda i: (shared[i], common[i]))[:CHANGED_ROWS]
    shown = sorted({j for i in worst for j in (i, *near[i].tolist(), *other_near[i].tolist())})
    texts = dict(zip(shown, _texts(mine, rows_here[shown])))
    other_texts = dict(zip(shown, _texts(theirs, np.array(shown))))
    changed = []
    for i in worst:
        both = set(near[i].tolist()) & set(other_near[i].tolist())
        changed.append(
            ChangedRow(
                id=common[i],
                excerpt=texts[i],
                overlap=shared[i],
                neighbours=tuple(Neighbour(common[j], texts[j], j in both) for j in near[i].tolist()),
                other_neighbours=tuple(Neighbour(common[j], other_texts[j], j in both) for j in other_near[i].tolist()),
            )
        )
    return TableComparison(
        table=mine.table.display,
        other=theirs.table.display,
        k=k,
        sampled=len(mine.ids),
        table_rows=mine.table.rows,
        other_rows=theirs.table.rows,
        ids=tuple(common),
        overlap=tuple(shared),
        changed=tuple(changed),
        texts_shown=any(text is not None for text in texts.values()),
        dimension=mine.table.dimension,
        other_dimension=theirs.table.dimension,
        lineage=module_lineage(mine.table),
        other_lineage=module_lineage(theirs.table),
    )


def _texts(sample: TableSample, rows: np.ndarray) -> list[str | None]:
    """Short excerpts of the texts of the sample's rows at `rows`."""
    ids = [sample.ids[i] for i in rows.tolist()]
    fields = {name: [values[i] for i in rows.tolist()] for name, values in sample.fields.items()}
    return [excerpt(text, EXCERPT_CHARS) for text in row_texts(sample.table, ids, fields)]
