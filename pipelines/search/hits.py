"""Search results: one `Hit` per row found, best first, and how they are printed (a table, or JSON lines)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Hit:
    """One row found for a query.

    Attributes:
      id: the row's id.
      score: how close it is, higher is closer: cosine similarity (cosine), inner product
        (inner_product), or minus the Euclidean distance (l2).
      fields: its passthrough columns.
    """

    id: str
    score: float
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """`{"id": ..., "score": ..., <fields>}`."""
        return {"id": self.id, "score": self.score, **self.fields}


def score_of(metric: str, distance: float) -> float:
    """The score of a pgvector distance (`<=>`, `<#>`, `<->`) for `metric`."""
    if metric == "cosine":
        return 1.0 - distance
    return -distance  # `<#>` is the negative inner product; l2 scores are negative distances


def json_line(query: str, hits: Sequence[Hit]) -> str:
    """One query's results as a JSON line: `{"query": ..., "hits": [...]}`."""
    return json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False)


def table_text(query: str, hits: Sequence[Hit], columns: Sequence[str]) -> str:
    """One query's results as an aligned text table: rank, score, id, then the passthrough columns."""
    header = ["rank", "score", "id", *columns]
    rows = [[str(i), f"{h.score:.4f}", h.id, *(_cell(h.fields.get(c)) for c in columns)] for i, h in enumerate(hits, 1)]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines = [f"query: {query}"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    if not hits:
        lines.append("  (no rows)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
