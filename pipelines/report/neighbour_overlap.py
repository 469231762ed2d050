"""Nearest neighbours within one sample of vectors, and how much two versions' neighbourhoods of the same rows agree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK_ROWS = 1024


def nearest_neighbours(ids: Sequence[str], vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` nearest other rows by cosine similarity, closest first.

    Ties are broken by id, so the result depends only on the rows, never on their order.

    Args:
      ids: the rows' ids, distinct.
      vectors: `[n, d]`, row `i` the vector of `ids[i]`.
      k: neighbours per row, at most `n - 1`.

    Returns:
      `[n, k]` row indices into `ids`.
    """
    n = len(ids)
    if vectors.shape[0] != n:
        raise ValueError(f"{n} ids and {vectors.shape[0]} vectors.")
    if not 0 < k < n:
        raise ValueError(f"k={k} neighbours need at least {k + 1} rows; there are {n}.")
    by_id = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    unit = _unit(np.asarray(vectors, np.float64)[by_id])
    nearest = np.empty((n, k), np.int64)
    for start in range(0, n, BLOCK_ROWS):  # a block of rows at a time: memory grows with n, not n squared
        similarity = unit[start : start + BLOCK_ROWS] @ unit.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf
        nearest[start : start + BLOCK_ROWS] = _smallest(-similarity, k)
    out = np.empty((n, k), np.int64)
    out[by_id] = by_id[nearest]
    return out


def neighbour_overlap(ids: Sequence[str], vectors_a: np.ndarray, vectors_b: np.ndarray, k: int) -> np.ndarray:
    """Per row, the share of its `k` nearest neighbours in space `a` that are also among its `k` nearest in space `b`.

    Each space's neighbours are computed within that space over the same rows, and then the two id
    sets are intersected, so the spaces may have different dimensions.

    Args:
      ids: the rows' ids, distinct; row `i` of both matrices belongs to `ids[i]`.
      vectors_a: `[n, d_a]`.
      vectors_b: `[n, d_b]`.
      k: neighbours per row, at most `n - 1`.

    Returns:
      `[n]` float64 values in [0, 1]: 1 when the neighbourhoods are the same, 0 when they share nobody.
    """
    return overlap(nearest_neighbours(ids, vectors_a, k), nearest_neighbours(ids, vectors_b, k))


def overlap(neighbours_a: np.ndarray, neighbours_b: np.ndarray) -> np.ndarray:
    """Per row, the share of the neighbours in `neighbours_a` (`[n, k]` indices) that `neighbours_b` has too."""
    k = neighbours_a.shape[1]
    return np.array([len(set(a) & set(b)) / k for a, b in zip(neighbours_a.tolist(), neighbours_b.tolist())])


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indices of its `k` smallest values, smallest first, ties to the lower index.

    The rows' columns are in id order, so ties go to the smaller id. A partition finds each row's `k`
    smallest in linear time; the few rows with a tie across the `k`-th value are sorted in full.
    """
    picked = np.sort(np.argpartition(values, k - 1, axis=1)[:, :k], axis=1)
    picked_values = np.take_along_axis(values, picked, 1)
    picked = np.take_along_axis(picked, np.argsort(picked_values, axis=1, kind="stable"), 1)
    tied = np.flatnonzero((values <= picked_values.max(1, keepdims=True)).sum(1) > k)
    if len(tied):
        picked[tied] = np.argsort(values[tied], axis=1, kind="stable")[:, :k]
    return picked


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
