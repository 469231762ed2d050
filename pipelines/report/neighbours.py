"""A few sampled rows with their nearest neighbours in the whole table (exact cosine search, in the stats' pass)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from pipelines.report.projection import unit_rows
from pipelines.report.texts import excerpt


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


class NeighbourSearch:
    """The `k` nearest other rows of a few query rows, fed the table one record batch at a time.

    Each query keeps its best `k + 1` rows so far (itself among them); ties go to the smaller id, so the
    result does not depend on how the table is cut into batches.
    """

    def __init__(self, ids: list[str], vectors: np.ndarray, k: int, text_column: str | None):
        self.ids = ids
        self.k = k
        self.text_column = text_column
        self._queries = unit_rows(vectors)
        self._kept: list[list[tuple[float, str, str | None]]] = [[] for _ in ids]

    def __call__(self, batch: pa.RecordBatch, vectors: np.ndarray) -> None:
        """Takes the batch's rows that beat those kept."""
        if not self.ids or not len(vectors):
            return
        scores = unit_rows(vectors) @ self._queries.T
        keep = min(self.k + 1, len(scores))
        best = np.argpartition(-scores, keep - 1, axis=0)[:keep]
        ids = batch.column("id")
        texts = batch.column(self.text_column) if self.text_column else None
        for q in range(len(self.ids)):
            rows = best[:, q]
            found = [
                (float(scores[r, q]), ids[int(r)].as_py(), texts[int(r)].as_py() if texts is not None else None)
                for r in rows
            ]
            merged = sorted(self._kept[q] + found, key=lambda hit: (-hit[0], hit[1]))
            self._kept[q] = merged[: self.k + 1]

    def results(self) -> list[NeighbourList]:
        """Each query's nearest other rows, nearest first."""
        return [
            NeighbourList(
                q,
                tuple(
                    Neighbour(hit_id, score, excerpt(text))
                    for score, hit_id, text in [hit for hit in kept if hit[1] != self.ids[q]][: self.k]
                ),
            )
            for q, kept in enumerate(self._kept)
        ]
