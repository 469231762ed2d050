"""Figures formatted for the benchmarks' printed reports and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 1) -> str:
    """A figure for a table: `-` for None, floats to `digits` decimals, anything else as `str`."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (pipes in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def verdict(met: bool | None) -> str:
    """A target's standing in words."""
    return {True: "met", False: "NOT met", None: "not measured"}[met]
