"""A few sampled rows with their nearest neighbours in the whole table (exact cosine search)."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.publish.source import SourceTable
from pipelines.report.texts import excerpt, text_column
from pipelines.search.exact import search_table


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """A row near another: its id, cosine similarity and the text column's value (if the table has one)."""

    id: str
    similarity: float
    text: str | None


@dataclasses.dataclass(frozen=True)
class NeighbourList:
    """A sampled row (its index in the sample) and its nearest other rows, nearest first."""

    row: int
    neighbours: tuple[Neighbour, ...]


def nearest_neighbours(table: SourceTable, ids: list[str], vectors: np.ndarray, k: int) -> list[NeighbourList]:
    """The `k` nearest other rows of each of `ids` (rows of the table, with their `vectors`), in one pass."""
    if not ids:
        return []
    column = text_column(table)
    hits = search_table(table, vectors, k + 1, "cosine", columns=[column] if column else [])
    out = []
    for row, (row_id, found) in enumerate(zip(ids, hits)):
        others = [hit for hit in found if hit.id != row_id][:k]
        out.append(
            NeighbourList(
                row, tuple(Neighbour(h.id, h.score, excerpt(h.fields.get(column)) if column else None) for h in others)
            )
        )
    return out
