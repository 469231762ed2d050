"""The embedding DAGs' `publish` task: a committed table into the pgvector collection of the job's `publish:` section.

The database's password comes from an Airflow connection (read through the Postgres provider's hook), the
workers' environment (`to_env`) or libpq's own files, and reaches the publish as a direct call in the task
process: never an XCom, a templated field or a log line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

from pipelines.embedding.config_errors import ConfigError
from pipelines.embedding.publish_section import PublishSection, publish_section

# The Airflow connection's extras passed on to libpq (others are the hook's own settings).
LIBPQ_EXTRAS = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "application_name",
    "options",
    "connect_timeout",
    "target_session_attrs",
)


def connection_conninfo(conn_id: str) -> str:
    """The libpq connection string of an Airflow Postgres connection, its secrets registered with the masker.

    Read through `PostgresHook(postgres_conn_id=conn_id)`: its host, port, login, password, database
    (the connection's schema) and the libpq options among its extras.

    Returns:
      The connection string; a secret: it goes to the publish and nowhere else.
    """
    # The Postgres provider and psycopg load when the task runs, never while a DAG file is parsed.
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from psycopg.conninfo import make_conninfo

    hook = PostgresHook(postgres_conn_id=conn_id)
    connection = hook.connection
    if connection.password:
        mask_secret(connection.password)
    params: dict[str, Any] = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.login,
        "password": connection.password,
        "dbname": hook.database or connection.schema,
    }
    params.update({k: v for k, v in connection.extra_dejson.items() if k in LIBPQ_EXTRAS})
    conninfo = make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})
    mask_secret(conninfo)
    return conninfo


def section_conninfo(section: PublishSection) -> str:
    """The database of a `publish:` section: its Airflow connection, or `to_env` / `to` as the command reads them.

    Raises:
      AirflowFailException: the variable `to_env` names is unset.
    """
    if section.conn_id:
        return connection_conninfo(section.conn_id)
    try:
        conninfo = section.database_uri(os.environ)
    except ConfigError as e:
        raise AirflowFailException(str(e)) from None
    mask_secret(conninfo)
    return conninfo


@task
def publish(plan: Mapping[str, str], section: Mapping[str, Any], replace: bool = False) -> dict[str, Any]:
    """Publishes the run's committed table into the section's collection; returns what the publish did.

    Args:
      plan: the plan task's output (`output` is the committed table).
      section: the job's `publish:` section as a mapping (it holds no secret: a connection id, a variable
        name, or a URI without a password).
      replace: build the collection anew and swap it in (a re-embedding with an updated module).

    Raises:
      AirflowFailException: the publish was refused before any write (not retried).
      RuntimeError: the publish failed while it ran; the collection is as it was, and a retry completes it.
    """
    # The publish brings Beam, PyArrow and psycopg: imported when the task runs, never while a DAG file is parsed.
    import psycopg

    from pipelines.publish import publishing
    from pipelines.publish.errors import PublishError, PublishFailed
    from pipelines.publish.options import PublishConfig

    try:
        checked = publish_section(section)
        options = checked.options(replace=replace)
    except ConfigError as e:
        raise AirflowFailException(str(e)) from None
    conninfo = section_conninfo(checked)
    try:
        cfg = PublishConfig.create(plan["output"], conninfo, checked.collection, options)
    except PublishError as e:
        raise AirflowFailException(f"publish: {e}") from None
    try:
        result = publishing.run(cfg)
    except PublishError as e:
        raise AirflowFailException(cfg.target.scrub(f"publish: {e}")) from None
    except (PublishFailed, psycopg.Error) as e:
        raise RuntimeError(cfg.target.scrub(f"publish: {e}")) from None
    return {**dataclasses.asdict(result), "table": plan["output"], "database": cfg.target.display}
