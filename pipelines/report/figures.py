"""The report's Plotly figures, each an offline HTML fragment without plotly.js (the page inlines it once).

Figures are plain Plotly JSON (dicts) rendered with `plotly.io.to_html(validate=False)`: the same page,
without loading Plotly's Python validators, which would cost every embedding job seconds.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.io

# Plotly's config for every figure: no logo link, and nothing that would reach the network.
CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False}
# Colour values beyond this many share one trace ("other").
MAX_COLOURS = 12
_AXIS = {"gridcolor": "#e5e7eb", "zerolinecolor": "#d0d7de", "automargin": True}
_LAYOUT = {
    "margin": {"l": 50, "r": 20, "t": 50, "b": 45},
    "height": 340,
    "autosize": True,
    "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#ffffff",
    "font": {"family": "system-ui, sans-serif", "size": 12},
}
Figure = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A histogram's bin edges (`[bins + 1]`), its counts (`[bins]`) and its title."""

    edges: np.ndarray
    counts: np.ndarray
    title: str


def fragment(figure: Figure, element_id: str) -> str:
    """The figure as a `<div>` and the script that draws it; plotly.js must already be on the page."""
    return plotly.io.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        config=CONFIG,
        div_id=element_id,
        validate=False,
    )


def _layout(title: str, x_title: str, y_title: str, **more: Any) -> dict[str, Any]:
    return {
        **_LAYOUT,
        "title": {"text": title},
        "xaxis": {**_AXIS, "title": {"text": x_title}},
        "yaxis": {**_AXIS, "title": {"text": y_title}},
        **more,
    }


def histogram(edges: np.ndarray, counts: np.ndarray, title: str, x_title: str, element_id: str) -> str:
    """A histogram from its bins' edges and counts (the page carries the counts, not every value)."""
    centres = (edges[:-1] + edges[1:]) / 2
    trace = {
        "type": "bar",
        "x": centres.tolist(),
        "y": counts.tolist(),
        "width": float(edges[1] - edges[0]) if len(edges) > 1 else None,
        "marker": {"color": "#4c78a8"},
        "customdata": np.stack([edges[:-1], edges[1:]], axis=1).tolist(),
        "hovertemplate": "%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{y} rows<extra></extra>",
    }
    return fragment({"data": [trace], "layout": _layout(title, x_title, "rows", bargap=0.02)}, element_id)


def bars(labels: Sequence[str], counts: Sequence[int], title: str, element_id: str) -> str:
    """A horizontal bar chart of counts (labels are escaped by the caller)."""
    trace = {
        "type": "bar",
        "x": list(counts),
        "y": list(labels),
        "orientation": "h",
        "marker": {"color": "#e45756"},
        "hovertemplate": "%{y}: %{x}<extra></extra>",
    }
    layout = _layout(title, "rows", "", height=max(160, 60 + 28 * len(labels)))
    return fragment({"data": [trace], "layout": layout}, element_id)


def colour_groups(values: Sequence[str | None]) -> list[tuple[str, list[int]]]:
    """The map's traces: the most common values, one trace each, the rest together as "other"."""
    labels = ["(none)" if v is None else str(v) for v in values]
    common = [label for label, _ in collections.Counter(labels).most_common(MAX_COLOURS)]
    kept = set(common)
    groups: dict[str, list[int]] = {label: [] for label in common}
    other: list[int] = []
    for i, label in enumerate(labels):
        (groups[label] if label in kept else other).append(i)
    out = list(groups.items())
    if other:
        out.append((f"other ({len(set(labels) - kept)} values)", other))
    return out


def scatter_map(
    coords: np.ndarray,
    ids: Sequence[str],
    texts: Sequence[str | None],
    thumbnails: Sequence[str | None] | None,
    colour_by: str | None,
    colour_values: Sequence[str | None] | None,
    title: str,
    element_id: str,
) -> str:
    """The 2-D map: one trace per colour value; hovering shows a point's id and text (its thumbnail beside the map).

    Ids, texts and colour values are shown by Plotly as its own markup: the caller escapes them.
    """
    groups = colour_groups(colour_values) if colour_values is not None else [("rows", list(range(len(ids))))]
    traces = []
    for label, members in groups:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": label,
                "x": coords[members, 0].tolist(),
                "y": coords[members, 1].tolist(),
                "marker": {"size": 6, "opacity": 0.8},
                "customdata": [[ids[i], texts[i] or "", (thumbnails[i] or "") if thumbnails else ""] for i in members],
                "hovertemplate": "<b>%{customdata[0]}</b><br>%{customdata[1]}<extra>" + label + "</extra>",
            }
        )
    layout = _layout(
        title,
        "component 1",
        "component 2",
        height=560,
        showlegend=colour_values is not None,
        legend={"title": {"text": colour_by or ""}},
        hoverlabel={"namelength": -1, "align": "left"},
    )
    return fragment({"data": traces, "layout": layout}, element_id)
