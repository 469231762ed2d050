"""The catalogue: one row per collection of a schema, saying what its vectors are and what was last published.

`hub_embed_catalogue` (per schema) records the collection's vector space (module handle without
credentials, fingerprint, signature, output key, dimension, and how queries are embedded), its
metric, vector type, columns and index, the table and run last published into it, that publish's
run id, time and changes. `hub_embed_staged_chunks` records which chunks of a table a publish
has staged into which work table, so that a publish run again after a kill stages each chunk once.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.publish.index import IndexSpec
from pipelines.publish.vector_space import VectorSpace

CATALOGUE = "hub_embed_catalogue"
STAGED_CHUNKS = "hub_embed_staged_chunks"
# One lock serializes creating the bookkeeping tables (CREATE TABLE IF NOT EXISTS races otherwise).
_SETUP_LOCK = "hub-embed:setup"

_CATALOGUE_DDL = """
CREATE TABLE IF NOT EXISTS {} (
    collection text PRIMARY KEY,
    module text NOT NULL,
    fingerprint text NOT NULL,
    signature text NOT NULL,
    output_key text NOT NULL,
    dimension integer NOT NULL,
    metric text NOT NULL,
    vector_type text NOT NULL,
    columns jsonb NOT NULL,
    index jsonb NOT NULL,
    space jsonb NOT NULL,
    source_table text NOT NULL,
    source_run_id text NOT NULL,
    publish_run text NOT NULL,
    published_at timestamptz NOT NULL,
    row_count bigint NOT NULL,
    last_changes jsonb NOT NULL
)"""
_CHUNKS_DDL = """
CREATE TABLE IF NOT EXISTS {} (
    work_table text NOT NULL,
    chunk text NOT NULL,
    rows integer NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (work_table, chunk)
)"""


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    """One collection's catalogue row.

    Attributes:
      collection: the collection's name.
      space: its vector space.
      metric: "cosine", "l2" or "inner_product".
      vector_type: "vector" or "halfvec".
      columns: its passthrough columns.
      index: its index (None: no index).
      source_table: the table last published into it (credentials removed).
      source_run_id: that table's run id.
      publish_run: the publish that last changed it.
      published_at: when.
      row_count: its rows after that publish.
      last_changes: that publish's rows inserted, updated, deleted, unchanged and staged, and its seconds per phase.
    """

    collection: str
    space: VectorSpace
    metric: str
    vector_type: str
    columns: tuple[str, ...]
    index: IndexSpec | None
    source_table: str
    source_run_id: str
    publish_run: str
    published_at: datetime.datetime | None = None
    row_count: int = 0
    last_changes: dict[str, Any] = dataclasses.field(default_factory=dict)


def table(schema: str, name: str) -> sql.Composed:
    """`schema.name`, quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def ensure_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Creates the catalogue and the staged-chunks table in `schema` if they do not exist (commits)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_SETUP_LOCK])
        conn.execute(sql.SQL(_CATALOGUE_DDL).format(table(schema, CATALOGUE)))
        conn.execute(sql.SQL(_CHUNKS_DDL).format(table(schema, STAGED_CHUNKS)))


def read(conn: psycopg.Connection[Any], schema: str, collection: str) -> CatalogueEntry | None:
    """The collection's catalogue entry; None when it has none (or the schema has no catalogue yet)."""
    if not _exists(conn, schema, CATALOGUE):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT collection, space, metric, vector_type, columns, index, source_table, source_run_id, publish_run, "
            "published_at, row_count, last_changes FROM {} WHERE collection = %s"
        ).format(table(schema, CATALOGUE)),
        [collection],
    ).fetchone()
    if row is None:
        return None
    return CatalogueEntry(
        collection=row[0],
        space=VectorSpace.from_dict(row[1]),
        metric=row[2],
        vector_type=row[3],
        columns=tuple(row[4]),
        index=IndexSpec.from_dict(row[5]),
        source_table=row[6],
        source_run_id=row[7],
        publish_run=row[8],
        published_at=row[9],
        row_count=int(row[10]),
        last_changes=dict(row[11]),
    )


def write(conn: psycopg.Connection[Any], schema: str, entry: CatalogueEntry) -> None:
    """Inserts or replaces the collection's entry (in the caller's transaction)."""
    space = entry.space
    values = {
        "collection": entry.collection,
        "module": space.module,
        "fingerprint": space.fingerprint,
        "signature": space.signature,
        "output_key": space.output_key,
        "dimension": space.dimension,
        "metric": entry.metric,
        "vector_type": entry.vector_type,
        "columns": Jsonb(list(entry.columns)),
        "index": Jsonb(entry.index.to_dict() if entry.index else {"method": "none"}),
        "space": Jsonb(space.to_dict()),
        "source_table": entry.source_table,
        "source_run_id": entry.source_run_id,
        "publish_run": entry.publish_run,
        "published_at": entry.published_at or datetime.datetime.now(datetime.UTC),
        "row_count": entry.row_count,
        "last_changes": Jsonb(entry.last_changes),
    }
    names = list(values)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (collection) DO UPDATE SET {}").format(
            table(schema, CATALOGUE),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder(n) for n in names),
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names[1:]),
        ),
        values,
    )


def table_exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    """Whether `schema.name` is a table (or any relation)."""
    return _exists(conn, schema, name)


def _exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}"."{name}"']).fetchone()
    return bool(row and row[0])
