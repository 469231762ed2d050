"""`python -m pipelines.publish TABLE --to URI --collection NAME`: publish a committed table into pgvector.

Flags it does not define are Beam pipeline options (e.g. `--direct_num_workers=4
--direct_running_mode=multi_processing`, or `--runner=DataflowRunner ...`).

Exit status: 0 published, 1 the publish failed (the collection is as it was; running the same command
again completes it), 2 refused before any write (table, database, credentials, collection or options).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import psycopg

from pipelines import console
from pipelines.publish.commit import PublishResult
from pipelines.publish.errors import PublishError, PublishFailed
from pipelines.publish.options import (
    DEFAULT_REBUILD_ABOVE,
    INDEX_METHODS,
    METRICS,
    PublishConfig,
    PublishOptions,
)
from pipelines.publish.publishing import run

_LOG = logging.getLogger("hub_embed")


def parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.publish",
        description="Publish a committed embedding table into a PostgreSQL + pgvector collection.",
        epilog="Other flags are Beam pipeline options. Give the password through PGPASSWORD, ~/.pgpass or "
        "PGSERVICE rather than in the URI: a command line is visible to other users of the machine.",
    )
    parser.add_argument("table", help="the committed table's directory (local, gs://, s3://)")
    parser.add_argument("--to", required=True, metavar="URI", help="the database: postgresql://USER@HOST:PORT/DBNAME")
    parser.add_argument("--collection", required=True, help="the collection (a table of that name)")
    parser.add_argument("--schema", help="the collection's schema (default: the database's default schema)")
    parser.add_argument("--halfvec", action="store_true", help="store halfvec (16-bit floats) instead of vector")
    parser.add_argument("--index", choices=INDEX_METHODS, default="hnsw", help="the vector index (default: hnsw)")
    parser.add_argument("--metric", choices=METRICS, default="cosine", help="the index's distance (default: cosine)")
    parser.add_argument("--hnsw-m", type=int, default=16, help="HNSW links per node (default: 16)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=64, help="HNSW build candidates (default: 64)")
    parser.add_argument("--ivfflat-lists", type=int, help="IVFFlat lists (default: rows / 1000)")
    parser.add_argument("--keep-missing", action="store_true", help="keep rows whose id the table no longer has")
    parser.add_argument(
        "--rebuild-above",
        type=_share,
        default=DEFAULT_REBUILD_ABOVE,
        metavar="SHARE",
        help="a merge into an HNSW collection that would write more than this share of its rows builds the merged "
        "collection beside the old one and swaps it in; 'never': always update in place (default: %(default)s)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="build the collection anew beside the old one and swap it in (needed for another module or columns)",
    )
    parser.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="seconds to wait for the database")
    console.add_verbose_flag(parser)
    return parser


def _share(value: str) -> float | None:
    """`--rebuild-above`'s value: a share (0 or more), or "never"."""
    if value.strip().lower() == "never":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a share (such as 0.15) or 'never'") from None


def summary(result: PublishResult, table: str, target: str, seconds: float) -> str:
    """What the command prints when it has published."""
    index = result.index
    if index is None:
        index_line = "no vector index"
    else:
        params = ", ".join(f"{k}={v}" for k, v in index["build_params"].items())
        built = f"built in {result.index_build_s:.1f}s" if result.index_build_s else "kept"
        index_line = f"{index['method']} index ({params}, {index['opclass']}), {built}"
    mode = f"{result.mode} (rebuilt beside the old collection)" if result.rebuilt else result.mode
    return "\n".join(
        [
            f"Published {table} (run {result.source_run_id}) into {result.collection} at {target}",
            f"  {mode}: {result.inserted} inserted, {result.updated} updated, {result.deleted} deleted, "
            f"{result.unchanged} unchanged; {result.rows} rows in the collection",
            f"  {index_line}",
            f"  publish run {result.publish_run}, {seconds:.1f}s",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one publish; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not console.verbose(argv):
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    args, beam_args = parser().parse_known_args(argv)
    start = time.monotonic()
    try:
        options = PublishOptions(
            schema=args.schema,
            halfvec=args.halfvec,
            index=args.index,
            metric=args.metric,
            hnsw_m=args.hnsw_m,
            hnsw_ef_construction=args.hnsw_ef_construction,
            ivfflat_lists=args.ivfflat_lists,
            keep_missing=args.keep_missing,
            rebuild_above=args.rebuild_above,
            replace=args.replace,
            connect_timeout_s=args.connect_timeout,
            beam_args=tuple(beam_args),
        )
        cfg = PublishConfig.create(args.table, args.to, args.collection, options)
        _LOG.info("Publishing %s into collection %s at %s", cfg.table, cfg.collection, cfg.target.display)
        result = run(cfg)
    except PublishError as e:
        print(f"hub-embed publish: error: {e}", file=sys.stderr)
        return 2
    except PublishFailed as e:
        print(f"hub-embed publish: failed: {e} (running the same command again completes it)", file=sys.stderr)
        return 1
    except psycopg.Error as e:  # the database failed outside the steps that say so themselves
        print(f"hub-embed publish: failed: {cfg.target.scrub(str(e))}", file=sys.stderr)
        return 1
    print(summary(result, cfg.table, cfg.target.display, time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
