"""The report's comparison section: overlap histogram, both modules' lineage, the rows whose neighbours changed most.

The section is an HTML fragment; its Plotly figure carries no plotly.js (the page inlines it once).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from pipelines.report import figures
from pipelines.report.compare import ChangedRow, Neighbour, TableComparison
from pipelines.report.lineage import ModuleLineage


def comparison_html(comparison: TableComparison) -> str:
    """The `<section>` of a report that compares its table with another (`compare.compare_tables`).

    Args:
      comparison: the comparison.

    Returns:
      An HTML fragment; text is escaped, and the histogram needs plotly.js on the page.
    """
    c = comparison
    e = html.escape
    summary = (
        f"<p>{len(c.ids)} rows compared: the ids of a sample of {c.sampled} of this table's {c.table_rows} rows that "
        f"<code>{e(c.other)}</code> ({c.other_rows} rows) holds too. Each table's {c.k} nearest neighbours of a row "
        f"are found within its own vector space (cosine; dimension {c.dimension} here, {c.other_dimension} there) "
        f"among the rows compared; a row's overlap@{c.k} is the share of neighbours the two agree on.</p>"
        f'<ul class="compare-summary">'
        f"<li>mean overlap@{c.k}: <strong>{c.mean_overlap:.3f}</strong> (median {c.median_overlap:.2f})</li>"
        f"<li>rows with the same neighbours: {c.share(1.0):.1%}</li>"
        f"<li>rows with no neighbour in common: {c.share(0.0):.1%}</li></ul>"
    )
    return (
        f'<section class="report-compare" id="compare">\n'
        f"<h2>Compared with <code>{e(c.other)}</code></h2>\n"
        f"{summary}\n"
        f"{_histogram(c)}\n"
        f"<h3>Modules</h3>\n{_lineage_table(c)}\n"
        f"<h3>Rows whose neighbours changed most</h3>\n{_changed_table(c)}\n"
        "</section>\n"
    )


def _histogram(c: TableComparison) -> str:
    """One bar per possible overlap value (0, 1/k, ..., 1): the rows that have it."""
    edges = (np.arange(c.k + 2) - 0.5) / c.k
    counts, _ = np.histogram(np.asarray(c.overlap, np.float64), bins=edges)
    return figures.histogram(
        edges,
        counts,
        f"Neighbour overlap@{c.k} per row ({len(c.ids)} rows)",
        f"overlap@{c.k} (share of the {c.k} nearest neighbours in both tables)",
        "compare-overlap-histogram",
    )


def _lineage_table(c: TableComparison) -> str:
    rows = [
        ("table", c.table, c.other),
        ("module handle", c.lineage.handle, c.other_lineage.handle),
        ("name", c.lineage.name, c.other_lineage.name),
        ("version", c.lineage.version, c.other_lineage.version),
        ("fingerprint", c.lineage.fingerprint, c.other_lineage.fingerprint),
        ("parent version", _parent(c.lineage), _parent(c.other_lineage)),
    ]
    names = list(dict.fromkeys([n for n, _ in c.lineage.metrics] + [n for n, _ in c.other_lineage.metrics]))
    metrics = dict(c.lineage.metrics), dict(c.other_lineage.metrics)
    rows += [(f"release metric {n}", _number(metrics[0].get(n)), _number(metrics[1].get(n))) for n in names]
    rows.append(("module.json", c.lineage.unavailable or "read", c.other_lineage.unavailable or "read"))
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{_cell(mine)}</td><td>{_cell(theirs)}</td></tr>"
        for name, mine, theirs in rows
    )
    return (
        '<table class="compare-lineage"><thead><tr><th></th><th>this table</th><th>compared with</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _parent(lineage: ModuleLineage) -> str | None:
    if lineage.unavailable:
        return "not available"
    if not lineage.parent:
        return "none"
    p = lineage.parent
    return f"{p.get('name')} v{p.get('version')} ({p.get('fingerprint')})"


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _cell(value: object) -> str:
    return "<em>unknown</em>" if value is None else f"<code>{html.escape(str(value))}</code>"


def _changed_table(c: TableComparison) -> str:
    head = (
        f"<thead><tr><th>row</th><th>overlap@{c.k}</th><th>neighbours in <code>{html.escape(c.other)}</code></th>"
        "<th>neighbours in this table</th></tr></thead>"
    )
    body = "".join(_changed_row(row) for row in c.changed)
    note = (
        "<p>Neighbours in <strong>bold</strong> are among the row's neighbours in both tables."
        + ("" if c.texts_shown else " The table keeps no text, so rows show their ids only.")
        + "</p>"
    )
    return f'{note}<table class="compare-changed">{head}<tbody>{body}</tbody></table>'


def _changed_row(row: ChangedRow) -> str:
    return (
        f"<tr><td>{_label(row.id, row.excerpt)}</td><td>{row.overlap:.1f}</td>"
        f"<td>{_neighbours(row.other_neighbours)}</td><td>{_neighbours(row.neighbours)}</td></tr>"
    )


def _neighbours(neighbours: Sequence[Neighbour]) -> str:
    items = "".join(
        f"<li>{'<strong>' if n.in_both else ''}{_label(n.id, n.excerpt)}{'</strong>' if n.in_both else ''}</li>"
        for n in neighbours
    )
    return f"<ol>{items}</ol>"


def _label(row_id: str, text: str | None) -> str:
    label = f"<code>{html.escape(row_id)}</code>"
    return label if text is None else f"{label} {html.escape(text)}"
