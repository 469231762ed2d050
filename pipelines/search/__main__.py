"""`python -m pipelines.search`: the rows closest to a query, in a published collection or a committed table.

    python -m pipelines.search --to postgresql://USER@HOST/DB --collection docs --query "a question" -k 5
    python -m pipelines.search --table output/sample --query "one" --query "two" --json

Queries are embedded by the module that made the vectors (recorded in the table's manifest or the
collection's catalogue; its fingerprint is checked). `--table` scores every row (exact); `--to` goes
through the collection's index. Other flags are Beam file-system options (for gs:// and s3:// tables).

Exit status: 0 searched, 1 the search failed, 2 bad input (query, table, collection, module, database).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import psycopg
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import console
from pipelines.embedding.paths import absolute
from pipelines.publish import database
from pipelines.publish.errors import PublishError
from pipelines.publish.options import METRICS, check_identifier
from pipelines.publish.source import open_table
from pipelines.publish.target import parse_target
from pipelines.publish.vector_space import VectorSpace
from pipelines.search.collection import find_collection, search_collection
from pipelines.search.errors import SearchError
from pipelines.search.exact import search_table
from pipelines.search.hits import Hit, json_line, table_text
from pipelines.search.queries import QueryEncoder


def parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.search", description="Search a published collection or a committed table."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--table", help="a committed table's directory: exact search over its rows")
    where.add_argument("--to", metavar="URI", help="the database holding the collection (with --collection)")
    parser.add_argument("--collection", help="the published collection to search (with --to)")
    parser.add_argument("--schema", help="the collection's schema (default: the database's default schema)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", action="append", metavar="TEXT", help="a query text (repeatable)")
    what.add_argument("--query-image", action="append", metavar="PATH", help="a query image file (repeatable)")
    parser.add_argument("-k", type=int, default=10, help="rows per query (default: 10)")
    parser.add_argument("--json", action="store_true", help="one JSON object per query per line")
    parser.add_argument(
        "--module", help="the module to embed queries with, instead of the recorded one (same fingerprint)"
    )
    parser.add_argument("--metric", choices=METRICS, help="with --table: the score (default: cosine)")
    parser.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="seconds to wait for the database")
    console.add_verbose_flag(parser)
    return parser


def _embed(encoder: QueryEncoder, args: argparse.Namespace) -> tuple[list[str], np.ndarray]:
    if args.query_image:
        return list(args.query_image), encoder.images(args.query_image)
    return list(args.query), encoder.texts(args.query)


def search(args: argparse.Namespace, beam_args: Sequence[str] = ()) -> tuple[list[str], list[list[Hit]], Sequence[str]]:
    """Runs the search the flags describe: the queries, their hits, and the passthrough columns shown.

    Raises:
      SearchError, PublishError: bad input.
    """
    if args.k < 1:
        raise SearchError(f"-k must be a positive integer, got {args.k}.")
    if args.table:
        if args.collection or args.schema:
            raise SearchError("--collection and --schema go with --to, not --table.")
        FileSystems.set_options(PipelineOptions(list(beam_args)))
        table = open_table(absolute(args.table))
        encoder = QueryEncoder(VectorSpace.of_table(table.metadata, table.config), args.module)
        queries, vectors = _embed(encoder, args)
        return queries, search_table(table, vectors, args.k, args.metric or "cosine"), table.passthrough
    if not args.collection:
        raise SearchError("--to needs --collection: the published collection to search.")
    if args.metric:
        raise SearchError("--metric goes with --table; a collection is searched with the metric it was published with.")
    check_identifier("collection", args.collection)
    target = parse_target(args.to)
    with database.connect(target, args.connect_timeout) as conn:
        schema, entry = find_collection(conn, target, args.schema, args.collection)
        encoder = QueryEncoder(entry.space, args.module)
        queries, vectors = _embed(encoder, args)
        return queries, search_collection(conn, schema, entry, vectors, args.k), entry.columns


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one search; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, beam_args = parser().parse_known_args(argv)
    try:
        queries, results, columns = search(args, beam_args)
    except (SearchError, PublishError) as e:
        print(f"hub-embed search: error: {e}", file=sys.stderr)
        return 2
    except psycopg.Error as e:
        secrets = parse_target(args.to).scrub(str(e)) if args.to else str(e)
        print(f"hub-embed search: failed: {secrets}", file=sys.stderr)
        return 1
    for query, hits in zip(queries, results):
        print(json_line(query, hits) if args.json else table_text(query, hits, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
