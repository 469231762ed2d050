"""Search in a published collection, through its vector index, with the settings its catalogue entry records."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pipelines.publish import catalogue, database
from pipelines.publish.catalogue import CatalogueEntry
from pipelines.publish.index import OPERATORS
from pipelines.publish.target import Target
from pipelines.publish.vectors import vector_value
from pipelines.search.errors import SearchError
from pipelines.search.hits import Hit, score_of


def find_collection(
    conn: psycopg.Connection[Any], target: Target, schema: str | None, collection: str
) -> tuple[str, CatalogueEntry]:
    """The collection's schema and catalogue entry.

    Raises:
      SearchError: the database lacks pgvector, or the collection is not a published one.
    """
    db = database.check(conn, target, schema)
    entry = catalogue.read(conn, db.schema, collection)
    exists = catalogue.table_exists(conn, db.schema, collection)
    conn.rollback()
    if entry is None or not exists:
        raise SearchError(f"{target.display} has no published collection {db.schema}.{collection}.")
    return db.schema, entry


def search_collection(
    conn: psycopg.Connection[Any], schema: str, entry: CatalogueEntry, queries: np.ndarray, k: int
) -> list[list[Hit]]:
    """The top `k` rows of the collection for each query (`[Q, D]`), best first, through its index.

    The index's search settings (`hnsw.ef_search`, `ivfflat.probes`) are set for the transaction; HNSW's
    candidate list is at least `k`.
    """
    columns = list(entry.columns)
    operator = sql.SQL(OPERATORS[entry.metric])
    statement = sql.SQL(
        "SELECT id{}, embedding {} %(q)s AS distance FROM {}.{} ORDER BY embedding {} %(q)s LIMIT %(k)s"
    ).format(
        sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c)) for c in columns),
        operator,
        sql.Identifier(schema),
        sql.Identifier(entry.collection),
        operator,
    )
    results = []
    with conn.transaction():
        for name, value in _settings(entry, k).items():
            conn.execute(sql.SQL("SELECT set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(str(value))))
        for query in queries:
            rows = conn.execute(statement, {"q": vector_value(entry.vector_type, query), "k": k}).fetchall()
            results.append([Hit(r[0], score_of(entry.metric, float(r[-1])), dict(zip(columns, r[1:-1]))) for r in rows])
    return results


def _settings(entry: CatalogueEntry, k: int) -> dict[str, int]:
    settings = dict(entry.index.search_settings) if entry.index else {}
    if "hnsw.ef_search" in settings:
        settings["hnsw.ef_search"] = max(settings["hnsw.ef_search"], k)
    return settings
