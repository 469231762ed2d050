"""A collection's extras: its grants, carried over to a table swapped in, and what keeps a merge in place.

A table swapped in for a collection (a merge built beside it, or `--replace`) drops the old table. Its
table grants are granted again on the new one. For a merge, anything else that would be lost or
would block the drop (a view or rule on it, a trigger, a row-security policy, a publication, another
index, column grants, another owner) keeps the merge in place instead.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pipelines.publish.layout import Layout

# The table privileges `aclexplode` names (PostgreSQL 17 added MAINTAIN).
PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"})

# Each check: what it finds, as a reason, and the SQL counting it for the table `%(oid)s`.
_BLOCKERS = (
    (
        "a view or rule depends on it",
        "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
        "WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %(oid)s AND r.ev_class <> %(oid)s",
    ),
    ("it has a trigger", "SELECT count(*) FROM pg_trigger WHERE tgrelid = %(oid)s AND NOT tgisinternal"),
    (
        "it has row security or a policy",
        "SELECT count(*) FROM pg_class c WHERE c.oid = %(oid)s AND (c.relrowsecurity "
        "OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))",
    ),
    ("it is in a publication", "SELECT count(*) FROM pg_publication_rel WHERE prrelid = %(oid)s"),
    (
        "it has an index of its own",
        "SELECT count(*) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
        "WHERE i.indrelid = %(oid)s AND x.relname NOT IN (%(key)s, %(index)s)",
    ),
    (
        "it has column grants",
        "SELECT count(*) FROM pg_attribute WHERE attrelid = %(oid)s AND attnum > 0 AND attacl IS NOT NULL",
    ),
    (
        "another role owns it",
        "SELECT count(*) FROM pg_class WHERE oid = %(oid)s AND relowner <> (SELECT oid FROM pg_roles "
        "WHERE rolname = current_user)",
    ),
)


def swap_blockers(conn: psycopg.Connection[Any], layout: Layout) -> list[str]:
    """The reasons the collection cannot be replaced by a table built beside it without losing something."""
    params = {"oid": _oid(conn, layout), "key": layout.key_name, "index": layout.index_name}
    reasons = []
    for reason, statement in _BLOCKERS:
        row = conn.execute(statement, params).fetchone()
        if row and row[0]:
            reasons.append(reason)
    return reasons


def grant_again(conn: psycopg.Connection[Any], layout: Layout, table: str) -> int:
    """Grants on `table` the collection's table privileges (but its owner's own); returns how many."""
    rows = conn.execute(
        "SELECT a.privilege_type, a.grantee, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = %s AND a.grantee <> c.relowner",
        [_oid(conn, layout)],
    ).fetchall()
    for privilege, grantee, grantable in rows:
        assert privilege in PRIVILEGES, privilege
        role = sql.SQL("PUBLIC") if grantee == 0 else sql.Identifier(_role_name(conn, grantee))
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),
                layout.table(table),
                role,
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )
    return len(rows)


def _oid(conn: psycopg.Connection[Any], layout: Layout) -> int:
    row = conn.execute("SELECT %s::regclass::oid", [f'"{layout.schema}"."{layout.collection}"']).fetchone()
    assert row is not None
    return int(row[0])


def _role_name(conn: psycopg.Connection[Any], oid: int) -> str:
    row = conn.execute("SELECT rolname FROM pg_roles WHERE oid = %s", [oid]).fetchone()
    assert row is not None
    return str(row[0])
