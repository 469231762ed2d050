"""The report's sections as HTML fragments: the run, dead letters, vectors, the map, near-duplicates, neighbours.

Every value a table or its manifest holds is escaped here; the figures come from `figures`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from pipelines.report import figures
from pipelines.report.dead_letters import DeadLetters
from pipelines.report.near_duplicates import NearDuplicates
from pipelines.report.run_facts import RunFacts
from pipelines.report.vector_stats import VectorStats

e = html.escape
# The rows shown per near-duplicate group, and the groups shown.
GROUP_ROWS = 5
GROUPS_SHOWN = 10


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _row_cell(row_id: str, text: str | None, thumbnail: str | None) -> str:
    """A row as the page shows it: its thumbnail (inline data URI), its id and its text."""
    image = f'<img class="thumb" src="{e(thumbnail)}" alt=""> ' if thumbnail else ""
    words = f"<br>{e(text)}" if text else ""
    return f"{image}<code>{e(row_id)}</code>{words}"


def run_section(facts: RunFacts) -> str:
    """The run: module, counts, wall time, reuse and config."""
    c = facts.counts
    wall = f"{facts.wall_s:.1f} s" if facts.wall_s is not None else "unknown"
    module = [
        ("handle", f"<code>{e(facts.module)}</code>"),
        ("name", e(facts.module_name) or "<span class='note'>no module.json</span>"),
        ("fingerprint", f"<code>{e(facts.fingerprint)}</code>"),
        ("precision", e(facts.precision)),
        ("signature / output", f"<code>{e(facts.signature)}</code> / <code>{e(facts.output_key)}</code>"),
        ("dimension", str(facts.dimension)),
    ]
    counts = [
        (name, f"{c[key]:,}" if isinstance(c.get(key), int) else "–")
        for name, key in (
            ("rows in", "rows_in"),
            ("written", "rows_written"),
            ("embedded", "rows_embedded"),
            ("reused", "rows_reused"),
            ("failed", "rows_failed"),
            ("sharing another row's content", "rows_deduplicated"),
        )
    ]
    counts.append(("wall time", e(wall)))
    if facts.reuse and facts.reuse.get("used"):
        reuse = f"vectors taken from <code>{e(facts.reuse['table'])}</code> (run {e(str(facts.reuse.get('run_id')))})"
    elif facts.reuse:
        reuse = f"nothing taken from <code>{e(facts.reuse['table'])}</code>: {e(str(facts.reuse.get('reason')))}"
    else:
        reuse = "no reuse table"
    counts.append(("reuse", reuse))
    version = facts.code_version
    code = f"{e(str(version.get('package', '')))} {e(str(version.get('version', '')))}"
    if version.get("git_commit"):
        code += f" (commit <code>{e(str(version['git_commit'])[:12])}</code>{', dirty' if version.get('git_dirty') else ''})"
    config = e(json.dumps(facts.config, indent=2, sort_keys=True, default=str))
    return (
        '<section id="run"><h2>Run</h2>'
        f"<p>Run <code>{e(facts.run_id)}</code>, committed {e(facts.committed_at or 'at an unknown time')}; "
        f"written by {code}.</p>"
        f'<div class="grid"><div><h3>Module</h3><table>{_rows(module)}</table></div>'
        f"<div><h3>Rows</h3><table>{_rows(counts)}</table></div></div>"
        f"<details><summary>The job's config</summary><pre>{config}</pre></details></section>"
    )


def dead_letter_section(dead: DeadLetters) -> str:
    """Dead letters per stage and reason, with a few examples each."""
    if not dead.total:
        return '<section id="dead-letters"><h2>Dead letters</h2><p class="ok">No dead letters: every row read was written.</p></section>'
    stages = dead.by_stage
    chart = figures.bars(list(stages), list(stages.values()), "Dead letters per stage", "dead-letters-by-stage")
    body = []
    for group in dead.groups:
        examples = "".join(
            f"<tr><td><code>{e(x.id)}</code></td><td><code>{e(x.source)}</code></td><td>{e(x.error)}</td>"
            f"<td>{e(x.payload) if x.payload is not None else '<span class=note>not readable</span>'}</td></tr>"
            for x in group.examples
        )
        body.append(
            f"<h3>{e(group.stage)}: {group.count:,} × {e(group.reason)}</h3>"
            f"<table><tr><th>id</th><th>source</th><th>error</th><th>payload</th></tr>{examples}</table>"
        )
    return (
        f'<section id="dead-letters"><h2>Dead letters</h2><p class="warn">{dead.total:,} rows failed '
        "and are in the dead-letter table (<code>errors/</code>).</p>"
        f"{chart}{''.join(body)}</section>"
    )


def vector_section(stats: VectorStats, nearest: figures.Histogram | None) -> str:
    """Norms, zero and non-finite vectors, dimension, exact duplicates; the nearest-neighbour similarity histogram."""
    flags = []
    for count, ids, what in (
        (stats.zero, stats.zero_ids, "zero"),
        (stats.non_finite, stats.non_finite_ids, "non-finite"),
    ):
        if count:
            shown = ", ".join(f"<code>{e(i)}</code>" for i in ids)
            flags.append(f'<li class="bad">{count:,} {what} vectors, e.g. {shown}</li>')
        else:
            flags.append(f'<li class="ok">no {what} vectors</li>')
    flags.append(
        f"<li>{stats.exact_duplicates:,} rows are exact duplicates (their content hash is another row's; "
        f"{stats.distinct_contents:,} distinct contents)</li>"
    )
    norms = figures.histogram(
        stats.norm_bins, stats.norm_counts, f"Vector norms (all {stats.rows:,} rows)", "L2 norm", "norm-histogram"
    )
    similarity = (
        figures.histogram(nearest.edges, nearest.counts, nearest.title, "cosine similarity", "nearest-histogram")
        if nearest
        else ""
    )
    return (
        '<section id="vectors"><h2>Vectors</h2>'
        f"<p>{stats.rows:,} vectors of dimension {stats.dimension}; norms from {stats.norm_min:.6g} to "
        f"{stats.norm_max:.6g} (median {stats.norm_median:.6g}).</p><ul>{''.join(flags)}</ul>"
        f'<div class="grid"><div>{norms}</div><div>{similarity}</div></div></section>'
    )


def map_section(plot: str, note: str) -> str:
    """The 2-D map with the hover card beside it."""
    card = '<div class="hover-card"><span class="note">Hover over a point to see its row.</span></div>'
    return (
        f'<section id="map"><h2>Map</h2><p class="note">{e(note)}</p>'
        f'<div class="map"><div class="plot">{plot}</div>{card}</div></section>'
    )


def near_duplicate_section(
    found: NearDuplicates, ids: Sequence[str], texts: Sequence[str | None], thumbnails: dict[int, str | None]
) -> str:
    """The near-duplicate groups of the sample, largest first, with their rows."""
    head = (
        f"<p>Among {found.sampled_rows:,} sampled rows, {found.pairs:,} pairs have a cosine similarity of "
        f"{found.threshold:g} or more without the same content; they form {len(found.groups):,} groups "
        f"({found.rows:,} rows). Exact duplicates (same content hash) are counted under Vectors.</p>"
    )
    body = []
    for n, group in enumerate(found.groups[:GROUPS_SHOWN], 1):
        rows = "".join(f"<li>{_row_cell(ids[i], texts[i], thumbnails.get(i))}</li>" for i in group.members[:GROUP_ROWS])
        more = len(group.members) - GROUP_ROWS
        rest = f"<li class='note'>and {more} more</li>" if more > 0 else ""
        body.append(
            f"<h3>Group {n}: {len(group.members)} rows, similarity {group.min_similarity:.3f} to "
            f'{group.max_similarity:.3f}</h3><ul class="near-duplicates">{rows}{rest}</ul>'
        )
    return f'<section id="near-duplicates"><h2>Near-duplicates</h2>{head}{"".join(body)}</section>'


def neighbour_section(
    entries: Sequence[tuple[str, str | None, str | None, list[tuple[str, float, str | None, str | None]]]],
) -> str:
    """A few sampled rows, each with its nearest neighbours in the whole table (id, similarity, text or thumbnail)."""
    body = []
    for row_id, text, thumbnail, neighbours in entries:
        items = "".join(
            f'<li class="neighbour"><span class="score">{score:.3f}</span> {_row_cell(n_id, n_text, n_thumb)}</li>'
            for n_id, score, n_text, n_thumb in neighbours
        )
        body.append(
            f'<div class="row-query">{_row_cell(row_id, text, thumbnail)}</div><ol class="neighbours">{items}</ol>'
        )
    return (
        '<section id="neighbours"><h2>Nearest neighbours</h2><p class="note">Sampled rows and the rows of the whole '
        f"table nearest to each (cosine similarity).</p>{''.join(body)}</section>"
    )
