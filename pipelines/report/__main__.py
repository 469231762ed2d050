"""`python -m pipelines.report`: a committed table's self-contained HTML report.

    python -m pipelines.report output/sample
    python -m pipelines.report TABLE -o report.html --color-by lang --compare OLD_TABLE
    python -m pipelines.report TABLE --projector runs/projector   # then: tensorboard --logdir runs/projector

The page (by default `TABLE/_report.html`; Parquet readers skip `_` files) inlines its scripts and data,
so it opens offline. Other flags are Beam file-system options (for gs:// and s3:// tables).

Exit status: 0 written, 2 bad input (table, column, option, comparison), nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import console
from pipelines.embedding.paths import absolute
from pipelines.hub.redaction import redact
from pipelines.report.build import build_report, open_checked, report_path
from pipelines.report.compare import DEFAULT_K, compare_tables
from pipelines.report.compare_section import comparison_html
from pipelines.report.errors import ReportError
from pipelines.report.options import MAP_METHODS, ReportOptions
from pipelines.report.projector import DEFAULT_ROWS as PROJECTOR_ROWS
from pipelines.report.projector import write_projector
from pipelines.report.writing import write_text


def parser() -> argparse.ArgumentParser:
    """The command's flags."""
    defaults = ReportOptions()
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.report", description="Write a committed table's self-contained HTML report."
    )
    parser.add_argument("table", metavar="TABLE", help="the committed table's directory (local, gs://, s3://)")
    parser.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default: TABLE/_report.html)")
    parser.add_argument("--color-by", metavar="FIELD", help="the passthrough column colouring the map")
    parser.add_argument("--map", choices=MAP_METHODS, default=defaults.map_method, help="the map's projection")
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=defaults.sample_rows,
        metavar="N",
        help=f"rows sampled for the map and the near-duplicates (default: {defaults.sample_rows})",
    )
    parser.add_argument(
        "--near-duplicate-threshold",
        type=float,
        default=defaults.near_duplicate_threshold,
        metavar="COSINE",
        help=f"cosine similarity from which two rows are near-duplicates (default: {defaults.near_duplicate_threshold})",
    )
    parser.add_argument(
        "--compare", metavar="OTHER_TABLE", help="also compare with this table (e.g. the previous version's)"
    )
    parser.add_argument(
        "--compare-k", type=int, default=DEFAULT_K, metavar="K", help=f"neighbours compared (default: {DEFAULT_K})"
    )
    parser.add_argument(
        "--projector",
        metavar="DIR",
        help="also write TensorBoard Embedding Projector files for a sample into this local directory",
    )
    parser.add_argument(
        "--projector-rows",
        type=int,
        default=PROJECTOR_ROWS,
        metavar="N",
        help=f"rows sampled for the projector (default: {PROJECTOR_ROWS})",
    )
    parser.add_argument(
        "--projector-fields",
        metavar="FIELD,...",
        help="the columns labelling the projector's points beside the id (default: every passthrough column)",
    )
    console.add_verbose_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Writes one report; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, beam_args = parser().parse_known_args(argv)
    FileSystems.set_options(PipelineOptions(list(beam_args)))
    options = ReportOptions(
        sample_rows=args.sample_rows,
        color_by=args.color_by,
        map_method=args.map,
        near_duplicate_threshold=args.near_duplicate_threshold,
    )
    try:
        table = open_checked(absolute(args.table), options)
        extra = []
        if args.compare:
            comparison = compare_tables(table, absolute(args.compare), k=args.compare_k, rows=options.sample_rows)
            extra.append(comparison_html(comparison))
        text = build_report(table, options, extra)
        projector = (
            write_projector(
                table.path, absolute(args.projector), fields=_fields(args.projector_fields), rows=args.projector_rows
            )
            if args.projector
            else None
        )
    except ReportError as e:
        print(f"hub-embed report: error: {e}", file=sys.stderr)
        return 2
    path = absolute(args.output) if args.output else report_path(table.path)
    write_text(path, text)
    print(f"report: {redact(path)}")
    if projector:
        print(f"projector: {projector} (tensorboard --logdir {absolute(args.projector)})")
    return 0


def _fields(flag: str | None) -> list[str] | None:
    """`--projector-fields`' comma-separated names, or None for the default."""
    return None if flag is None else [name.strip() for name in flag.split(",") if name.strip()]


if __name__ == "__main__":
    sys.exit(main())
