"""Near-duplicates in a sample: groups of rows whose vectors' cosine similarity reaches a threshold.

Rows with the same content hash are exact duplicates (counted over the whole table by `vector_stats`);
a pair is a near-duplicate only when its contents differ. Pairs are joined into groups (connected
components), so a group holds rows linked by a chain of near-duplicate pairs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.report.projection import unit_rows

# Rows scored against the sample at a time (bounds the similarity matrix held).
BLOCK_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class NearDuplicateGroup:
    """Sampled rows linked by near-duplicate pairs.

    Attributes:
      members: the rows' indices in the sample, most similar pair first.
      min_similarity: the lowest similarity of the pairs that link them.
      max_similarity: the highest.
    """

    members: tuple[int, ...]
    min_similarity: float
    max_similarity: float


@dataclasses.dataclass(frozen=True)
class NearDuplicates:
    """The sample's near-duplicate pairs and their groups, largest first.

    Attributes:
      threshold: the cosine similarity a pair reaches.
      sampled_rows: the rows searched.
      pairs: the near-duplicate pairs.
      groups: the pairs joined into groups, largest first.
      nearest: each sampled row's highest similarity to another sampled row (-1 alone).
    """

    threshold: float
    sampled_rows: int
    pairs: int
    groups: tuple[NearDuplicateGroup, ...]
    nearest: np.ndarray

    @property
    def rows(self) -> int:
        """Sampled rows in some group."""
        return sum(len(g.members) for g in self.groups)


def near_duplicates(vectors: np.ndarray, content_hashes: list[str], threshold: float) -> NearDuplicates:
    """The near-duplicate groups among `vectors` (`[n, d]`) at cosine similarity `threshold` or more."""
    unit = unit_rows(vectors)
    hashes = np.asarray(content_hashes, object)
    pairs: list[tuple[float, int, int]] = []
    nearest = np.full(len(unit), -1.0, np.float32)
    for start in range(0, len(unit), BLOCK_ROWS):
        sims = unit[start : start + BLOCK_ROWS] @ unit.T
        block = np.arange(len(sims))
        sims[block, block + start] = -np.inf  # a row is not its own neighbour
        if len(unit) > 1:
            nearest[start : start + len(sims)] = sims.max(axis=1)
        rows, cols = np.nonzero(sims >= threshold)
        rows = rows + start
        keep = (cols > rows) & (hashes[rows] != hashes[cols])
        pairs += [(float(sims[r - start, c]), int(r), int(c)) for r, c in zip(rows[keep], cols[keep])]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    parent = list(range(len(unit)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, a, b in pairs:
        parent[root(a)] = root(b)
    grouped: dict[int, list[tuple[float, int, int]]] = {}
    for pair in pairs:
        grouped.setdefault(root(pair[1]), []).append(pair)
    groups = []
    for linked in grouped.values():
        members = list(dict.fromkeys(i for _, a, b in linked for i in (a, b)))
        similarities = [s for s, _, _ in linked]
        groups.append(NearDuplicateGroup(tuple(members), min(similarities), max(similarities)))
    groups.sort(key=lambda g: (-len(g.members), -g.max_similarity, g.members[0]))
    return NearDuplicates(threshold, len(unit), len(pairs), tuple(groups), nearest)
