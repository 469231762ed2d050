"""The work tables of a publish: made before staging, checked before the commit, dropped after it.

Work tables a publish killed earlier left behind are kept when their key is this publish's (their
staged chunks are used), and dropped otherwise, with their chunk records.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pipelines.publish import catalogue
from pipelines.publish.errors import PublishFailed
from pipelines.publish.layout import WORK_KINDS
from pipelines.publish.plan import BUILD, PublishPlan


def set_up(conn: psycopg.Connection[Any], plan: PublishPlan) -> int:
    """Creates the bookkeeping tables and this publish's work table; drops stale work tables of the collection.

    Returns:
      The chunks of this publish staged already (by an earlier, interrupted run of it).
    """
    layout = plan.layout
    catalogue.ensure_tables(conn, layout.schema)
    with conn.transaction():
        for name in stale_tables(conn, plan):
            drop(conn, plan, name)
        create = layout.create_build_table if plan.mode == BUILD else layout.create_stage_table
        conn.execute(create(plan.work_table))
    return len(staged_chunks(conn, plan))


def stale_tables(conn: psycopg.Connection[Any], plan: PublishPlan) -> list[str]:
    """The collection's work tables other than this publish's."""
    layout = plan.layout
    prefixes = [layout.work_prefix(kind) for kind in WORK_KINDS]
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' AND (starts_with(c.relname, %s) OR starts_with(c.relname, %s))",
        [layout.schema, *prefixes],
    ).fetchall()
    return sorted(name for (name,) in rows if name != plan.work_table)


def drop(conn: psycopg.Connection[Any], plan: PublishPlan, name: str) -> None:
    """Drops a work table and its chunk records (in the caller's transaction)."""
    layout = plan.layout
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(layout.table(name)))
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE work_table = %s").format(catalogue.table(layout.schema, catalogue.STAGED_CHUNKS)),
        [name],
    )


def staged_chunks(conn: psycopg.Connection[Any], plan: PublishPlan) -> dict[str, int]:
    """The chunks staged into this publish's work table, with their rows."""
    chunks_table = catalogue.table(plan.layout.schema, catalogue.STAGED_CHUNKS)
    rows = conn.execute(
        sql.SQL("SELECT chunk, rows FROM {} WHERE work_table = %s").format(chunks_table), [plan.work_table]
    ).fetchall()
    return {chunk: int(n) for chunk, n in rows}


def check_complete(conn: psycopg.Connection[Any], plan: PublishPlan) -> int:
    """Checks that every chunk of the table is staged once and the work table holds exactly the rows staged.

    A build stages every row of the table; a merge, the rows that differ from the collection.

    Returns:
      The rows staged.

    Raises:
      PublishFailed: a chunk is missing, or the rows do not add up (nothing is committed).
    """
    staged = staged_chunks(conn, plan)
    expected = {chunk.key for chunk in plan.chunks}
    if set(staged) != expected:
        missing = sorted(expected - set(staged))
        raise PublishFailed(
            f"{plan.collection}: {len(staged)} of {len(expected)} chunks are staged (missing: {missing[:5]}); "
            "nothing was committed."
        )
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(plan.layout.table(plan.work_table))).fetchone()
    count = int(row[0]) if row else 0
    rows = plan.table.rows if plan.mode == BUILD else sum(staged.values())
    if count != rows or (plan.mode == BUILD and sum(staged.values()) != rows):
        raise PublishFailed(
            f"{plan.collection}: the work table holds {count} rows, {rows} were staged; nothing was committed."
        )
    return count
