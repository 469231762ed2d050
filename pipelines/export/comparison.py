"""Measures of how closely one model's outputs match another's: max abs difference, cosine, agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def is_float(value: Any) -> bool:
    """True for an array-like of a floating dtype."""
    return np.issubdtype(np.asarray(value).dtype, np.floating)


def max_abs_diff(expected: Any, actual: Any) -> float:
    """Largest absolute difference (inf for mismatched shapes or unequal non-float values)."""
    a, b = np.asarray(expected), np.asarray(actual)
    if a.shape != b.shape:
        return float("inf")
    if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
        return 0.0 if np.array_equal(a, b) else float("inf")
    if a.size == 0:
        return 0.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.max(np.where(np.isnan(a) & np.isnan(b), 0.0, diff)))


def cosine_stats(expected: Any, actual: Any) -> dict[str, float | int]:
    """Cosine similarity of `actual` to `expected`, per vector along the last axis.

    A float output of shape [..., D] (D >= 2) is compared as its D-vectors (a
    row's embedding, a token's embedding); any other float output as one
    vector. Vectors that are zero in both (e.g. padded token positions) carry
    nothing to compare and are left out; a zero vector against a non-zero one
    counts as cosine 0.

    Returns:
      {"min": ..., "mean": ..., "vectors": n compared}; min and mean are 1.0
      when nothing is compared, -inf when the shapes differ.
    """
    a, b = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if a.shape != b.shape:
        return {"min": float("-inf"), "mean": float("-inf"), "vectors": 0}
    width = a.shape[-1] if a.ndim >= 2 and a.shape[-1] >= 2 else max(a.size, 1)
    a, b = a.reshape(-1, width), b.reshape(-1, width)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    compared = (norm_a > 0) | (norm_b > 0)
    if not compared.any():
        return {"min": 1.0, "mean": 1.0, "vectors": 0}
    a, b, norms = a[compared], b[compared], (norm_a * norm_b)[compared]
    cosine = np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)
    cosine = np.where(np.isfinite(cosine), cosine, -1.0)
    return {"min": float(np.min(cosine)), "mean": float(np.mean(cosine)), "vectors": int(len(cosine))}


def combine_cosine_stats(stats: Sequence[Mapping[str, float | int]]) -> dict[str, float | int]:
    """Min, vector-weighted mean and count over several `cosine_stats` results."""
    vectors = sum(s["vectors"] for s in stats)
    if not vectors:
        return {"min": 1.0, "mean": 1.0, "vectors": 0}
    mean = sum(s["mean"] * s["vectors"] for s in stats) / vectors
    return {"min": min(s["min"] for s in stats if s["vectors"]), "mean": mean, "vectors": vectors}


def agreement(expected: Any, actual: Any) -> dict[str, float | int]:
    """Share of equal elements between two non-float outputs (ids, masks, an argmax).

    Returns:
      {"share": equal / elements (1.0 when empty, 0.0 when the shapes differ),
      "equal": n, "elements": n}.
    """
    a, b = np.asarray(expected), np.asarray(actual)
    if a.shape != b.shape:
        return {"share": 0.0, "equal": 0, "elements": int(max(a.size, b.size))}
    equal = int(np.count_nonzero(a == b))
    return {"share": equal / a.size if a.size else 1.0, "equal": equal, "elements": int(a.size)}
