"""The report's Plotly figures, each an offline HTML fragment without plotly.js (the page inlines it once)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

# Plotly's config for every figure: no logo link, and nothing that would reach the network.
CONFIG = {"displaylogo": False, "responsive": True, "showSendToCloud": False}
# Colour values beyond this many share one trace ("other").
MAX_COLOURS = 12
_LAYOUT = {"margin": {"l": 50, "r": 20, "t": 50, "b": 45}, "template": "plotly_white", "height": 340}


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A histogram's bin edges (`[bins + 1]`), its counts (`[bins]`) and its title."""

    edges: np.ndarray
    counts: np.ndarray
    title: str


def fragment(figure: go.Figure, element_id: str) -> str:
    """The figure as a `<div>` and the script that draws it; plotly.js must already be on the page."""
    return figure.to_html(
        full_html=False, include_plotlyjs=False, include_mathjax=False, config=CONFIG, div_id=element_id
    )


def histogram(edges: np.ndarray, counts: np.ndarray, title: str, x_title: str, element_id: str) -> str:
    """A histogram from its bins' edges and counts (the page carries the counts, not every value)."""
    centres = (edges[:-1] + edges[1:]) / 2
    figure = go.Figure(
        go.Bar(
            x=centres.tolist(),
            y=counts.tolist(),
            width=float(edges[1] - edges[0]) if len(edges) > 1 else None,
            marker_color="#4c78a8",
            customdata=np.stack([edges[:-1], edges[1:]], axis=1).tolist(),
            hovertemplate="%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{y} rows<extra></extra>",
        )
    )
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title="rows", bargap=0.02, **_LAYOUT)
    return fragment(figure, element_id)


def bars(labels: Sequence[str], counts: Sequence[int], title: str, element_id: str) -> str:
    """A horizontal bar chart of counts."""
    figure = go.Figure(
        go.Bar(
            x=list(counts),
            y=list(labels),
            orientation="h",
            marker_color="#e45756",
            hovertemplate="%{y}: %{x}<extra></extra>",
        )
    )
    layout = {**_LAYOUT, "height": max(160, 60 + 28 * len(labels))}
    figure.update_layout(title=title, xaxis_title="rows", yaxis={"automargin": True}, **layout)
    return fragment(figure, element_id)


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
    """The 2-D map: one trace per colour value; hovering shows a point's id and text (its thumbnail beside the map)."""
    groups = colour_groups(colour_values) if colour_values is not None else [("rows", list(range(len(ids))))]
    figure = go.Figure()
    for label, members in groups:
        custom = [[ids[i], texts[i] or "", thumbnails[i] or "" if thumbnails else ""] for i in members]
        figure.add_trace(
            go.Scatter(
                x=coords[members, 0].tolist(),
                y=coords[members, 1].tolist(),
                mode="markers",
                name=label,
                marker={"size": 6, "opacity": 0.8},
                customdata=custom,
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra>" + label + "</extra>",
            )
        )
    figure.update_layout(
        title=title,
        legend_title_text=colour_by or "",
        showlegend=colour_values is not None,
        xaxis={"title": "component 1", "zeroline": False},
        yaxis={"title": "component 2", "zeroline": False},
        hoverlabel={"namelength": -1, "align": "left"},
        **{**_LAYOUT, "height": 560},
    )
    return fragment(figure, element_id)
