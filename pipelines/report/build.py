"""A table's report: its facts read, its sample's map, near-duplicates and neighbours computed, one page written.

Cost: the `id` column is read to pick the sample, the sampled rows' row groups to read them, and every
vector and content hash once more for the norms, the exact duplicates and the neighbours' search; the
map and the near-duplicates come from the sample (`ReportOptions.sample_rows`), whatever the table's size.
"""

from __future__ import annotations

import dataclasses
import html
import re
import time
from collections.abc import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding import sinks
from pipelines.embedding.config import REPORT_FILE
from pipelines.publish.errors import PublishError
from pipelines.publish.source import SourceTable, open_table
from pipelines.report import figures, page
from pipelines.report import sections as blocks
from pipelines.report.dead_letters import read_dead_letters
from pipelines.report.errors import ReportError
from pipelines.report.near_duplicates import near_duplicates
from pipelines.report.neighbours import NeighbourSearch
from pipelines.report.options import DEFAULT_OPTIONS, ReportOptions
from pipelines.report.projection import check_method, project
from pipelines.report.run_facts import run_facts
from pipelines.report.table_sample import read_sample
from pipelines.report.texts import row_texts, source_lines, text_column
from pipelines.report.thumbnails import thumbnail
from pipelines.report.vector_stats import vector_stats
from pipelines.report.writing import write_text

_TAG = re.compile(r"<[^>]*>")
_SECTION_ID = re.compile(r"<section\b[^>]*\bid=\"([^\"]*)\"")


@dataclasses.dataclass(frozen=True)
class WrittenReport:
    """Where a report went, how many rows it sampled, and how long it took."""

    path: str
    sampled_rows: int
    seconds: float


def open_checked(table: str | SourceTable, options: ReportOptions) -> SourceTable:
    """The table, checked with the options before anything is computed.

    Raises:
      ReportError: the table cannot be read, the options are invalid, `color_by` names no column of the
        table, or the map's method cannot run here.
    """
    options.check()
    check_method(options.map_method)
    if isinstance(table, str):
        try:
            table = open_table(table)
        except PublishError as e:
            raise ReportError(str(e)) from None
    columns = [*table.passthrough, "content_hash"]
    if options.color_by is not None and options.color_by not in columns:
        raise ReportError(
            f"--color-by {options.color_by!r} is not a column of table {table.display!r}; its columns to colour "
            f"by: {', '.join(columns)}."
        )
    return table


def build_report(
    table: str | SourceTable, options: ReportOptions = DEFAULT_OPTIONS, sections: Sequence[str] = ()
) -> str:
    """The report's HTML page.

    Args:
      table: a committed table's directory, or the table opened.
      options: what to show.
      sections: more `<section>` fragments put at the end of the page (e.g. a comparison); each must
        escape what it shows and draw its figures without plotly.js (the page inlines it once).

    Raises:
      ReportError: see `open_checked`.
    """
    table = open_checked(table, options)
    image = table.config.get("input_format") == "image"
    facts = run_facts(table, options.wall_s)
    dead = read_dead_letters(table)
    sample = read_sample(table, rows=options.sample_rows)
    queries = list(range(min(options.neighbour_rows, len(sample))))
    column = text_column(table)
    search = NeighbourSearch([sample.ids[i] for i in queries], sample.vectors[queries], options.neighbours, column)
    stats_table = vector_stats(table, search, [column] if column else [])
    texts = row_texts(table, sample.ids, sample.fields) if not image else [None] * len(sample)
    thumbs: dict[int, str | None] = {}

    def thumb(i: int) -> str | None:
        if image and i not in thumbs:
            thumbs[i] = thumbnail(sample.ids[i])
        return thumbs.get(i)

    map_rows = min(len(sample), options.image_map_rows) if image else len(sample)
    coords = project(sample.vectors[:map_rows], options.map_method)
    colour = sample.fields[options.color_by][:map_rows] if options.color_by else None
    plot = figures.scatter_map(
        coords,
        [html.escape(i) for i in sample.ids[:map_rows]],
        [html.escape(t) if t else None for t in texts[:map_rows]],
        [thumb(i) for i in range(map_rows)] if image else None,
        options.color_by,
        [html.escape(v) if v is not None else None for v in colour] if colour is not None else None,
        f"{options.map_method.upper()} of {map_rows:,} sampled rows"
        + (f", coloured by {options.color_by}" if options.color_by else ""),
        "map-plot",
    )
    found = near_duplicates(sample.vectors, sample.fields["content_hash"], options.near_duplicate_threshold)
    for group in found.groups[: blocks.GROUPS_SHOWN]:
        for i in group.members[: blocks.GROUP_ROWS]:
            thumb(i)
    neighbour_lists = search.results()
    neighbour_ids = [n.id for entry in neighbour_lists for n in entry.neighbours]
    other_texts = source_lines(neighbour_ids) if table.config.get("input_format") == "txt" else {}
    entries = [
        (
            sample.ids[entry.row],
            texts[entry.row],
            thumb(entry.row),
            [
                (n.id, n.similarity, n.text or other_texts.get(n.id), thumbnail(n.id) if image else None)
                for n in entry.neighbours
            ],
        )
        for entry in neighbour_lists
    ]
    nearest = None
    if len(sample) > 1:
        counts, edges = np.histogram(found.nearest, bins=40, range=(min(float(found.nearest.min()), 0.0), 1.0))
        nearest = figures.Histogram(
            edges, counts, f"Nearest other sampled row's similarity ({len(sample):,} sampled rows)"
        )
    sampled = (
        f"{len(sample):,} of the table's {table.rows:,} rows, the ids that hash lowest"
        if sample.sampled
        else f"all {table.rows:,} rows"
    )
    map_note = (
        f"{options.map_method.upper()} of {map_rows:,} rows ({sampled})"
        + (f"; an image table's map shows at most {options.image_map_rows:,} points" if image else "")
        + ". Hover over a point for its id and "
        + ("thumbnail." if image else "text.")
    )
    if not image and not any(texts):
        map_note += " This table holds no text column and its input's lines cannot be read back: ids only."
    parts = [
        ("run", "Run", blocks.run_section(facts)),
        ("dead-letters", "Dead letters", blocks.dead_letter_section(dead)),
        ("vectors", "Vectors", blocks.vector_section(stats_table, nearest)),
        ("map", "Map", blocks.map_section(plot, map_note)),
        ("near-duplicates", "Near-duplicates", blocks.near_duplicate_section(found, sample.ids, texts, thumbs)),
        ("neighbours", "Neighbours", blocks.neighbour_section(entries)),
    ]
    parts += [(*_anchor_and_label(fragment, n), fragment) for n, fragment in enumerate(sections, 1)]
    subtitle = (
        f"{table.rows:,} rows embedded by {facts.module_name or facts.module} (dimension {table.dimension}); "
        f"sample: {sampled}."
    )
    return page.render(f"hub-embed report: {table.display}", subtitle, parts)


def _anchor_and_label(fragment: str, n: int) -> tuple[str, str]:
    """An extra section's anchor (its `id`) and navigation label (its first `<h2>`'s text)."""
    anchor = _SECTION_ID.search(fragment)
    start = fragment.find("<h2>")
    end = fragment.find("</h2>", start)
    label = html.unescape(_TAG.sub("", fragment[start + 4 : end]))[:40] if 0 <= start < end else f"Section {n}"
    return (html.unescape(anchor.group(1)) if anchor else f"section-{n}"), label


def report_path(table: str) -> str:
    """Where a table's report goes by default: `TABLE/_report.html` (Parquet readers skip `_` files)."""
    return FileSystems.join(table, REPORT_FILE)


def write_report(
    table: str | SourceTable,
    options: ReportOptions = DEFAULT_OPTIONS,
    output: str | None = None,
    sections: Sequence[str] = (),
) -> WrittenReport:
    """Builds the report and writes it atomically to `output` (default `report_path`); see `build_report`.

    Raises:
      ReportError: see `open_checked`; or another run committed to the table while its report was made (a
        page of the table it replaced is not written over the new table's).
    """
    start = time.monotonic()
    opened = open_checked(table, options)
    path = output or report_path(opened.path)
    text = build_report(opened, options, sections)
    current = sinks.read_table_manifest(opened.path) or {}
    if current.get("run_id") != opened.run_id:  # another run committed meanwhile: this page is of a table gone
        raise ReportError(f"table {opened.display!r} was replaced while its report was made; nothing written.")
    write_text(path, text)
    return WrittenReport(path, min(options.sample_rows, opened.rows), time.monotonic() - start)
