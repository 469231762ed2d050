"""Connecting to the target database, with one clear message per way it can fail, and checking it can hold collections.

Every message names the database by `Target.display` and passes through `Target.scrub`: a
password never reaches an error, a log line or a result.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from pipelines.publish.errors import PublishError
from pipelines.publish.target import Target

APPLICATION_NAME = "hub-embed"
# SQLSTATEs of a refused login (invalid_password, invalid_authorization_specification) and of a missing database.
_AUTH_STATES = ("28P01", "28000")
_NO_DATABASE_STATE = "3D000"
# libpq reports a failed connection without a SQLSTATE; these phrases of its messages tell why.
_AUTH_PHRASES = ("password authentication failed", "no password supplied", "authentication failed", "pg_hba.conf")
_NO_ROLE = re.compile(r'role "[^"]*" does not exist')
_NO_DATABASE = re.compile(r'database "[^"]*" does not exist')


@dataclasses.dataclass(frozen=True)
class Database:
    """What was found on the target.

    Attributes:
      schema: the schema collections go to (the one asked for, else the database's default).
      vector_version: the installed pgvector extension's version.
      server_version: PostgreSQL's version number (e.g. 180004).
    """

    schema: str
    vector_version: str
    server_version: int


def connect(target: Target, timeout_s: int = 10, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Opens a connection, with pgvector's types registered when the extension is installed.

    Raises:
      PublishError: the database cannot be reached, refuses the credentials, or does not exist.
    """
    try:
        conn = psycopg.connect(
            target.conninfo, connect_timeout=timeout_s, application_name=APPLICATION_NAME, autocommit=autocommit
        )
    except psycopg.Error as e:
        raise PublishError(connect_error(target, e)) from None
    try:
        if _vector_version(conn) is not None:
            register_vector(conn)
            if not autocommit:
                conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def connect_error(target: Target, error: BaseException) -> str:
    """Why a connection failed, in one line, without secrets."""
    text = " ".join(str(error).split())
    state = getattr(error, "sqlstate", None)
    if state in _AUTH_STATES or any(p in text for p in _AUTH_PHRASES) or _NO_ROLE.search(text):
        why = "the server refused the user name or password"
    elif state == _NO_DATABASE_STATE or _NO_DATABASE.search(text):
        why = "the database does not exist"
    else:
        why = "the database cannot be reached"
    return target.scrub(f"cannot connect to {target.display}: {why} ({text})")


def check(conn: psycopg.Connection[Any], target: Target, schema: str | None) -> Database:
    """Checks that the database has pgvector and a schema this user may create tables in.

    Args:
      conn: a connection from `connect`.
      target: the database (for messages).
      schema: the schema asked for; None: the database's default schema.

    Raises:
      PublishError: the `vector` extension is not installed, or the schema is missing or not writable.
    """
    version = _vector_version(conn)
    if version is None:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        offered = (
            f"the server offers pgvector {available[0]}: a user allowed to (the database owner on managed "
            "services, or a superuser) must run CREATE EXTENSION vector; in it"
            if available
            else "the server does not offer pgvector: install it (on Cloud SQL, AlloyDB and RDS it is the "
            "`vector` extension), then run CREATE EXTENSION vector; in the database"
        )
        raise PublishError(target.scrub(f"{target.display}: the vector extension is not installed: {offered}."))
    if schema is None:
        row = conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise PublishError(f"{target.display}: no schema on the search_path exists; name one with --schema.")
        schema = str(row[0])
    exists = conn.execute(
        "SELECT has_schema_privilege(%s, 'CREATE') FROM pg_namespace WHERE nspname = %s", [schema, schema]
    )
    row = exists.fetchone()
    if row is None:
        raise PublishError(f"{target.display}: schema {schema!r} does not exist.")
    if not row[0]:
        raise PublishError(f"{target.display}: this user may not create tables in schema {schema!r}.")
    server_version = conn.info.server_version
    conn.rollback()
    return Database(schema, version, server_version)


def _vector_version(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return str(row[0]) if row else None
