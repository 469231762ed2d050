"""A job's `publish:` section: where its committed table is published, with no password in the file."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.embedding.config_errors import ConfigError, suggest, type_error

PUBLISH_DATABASE_KEYS = ("conn_id", "to_env", "to")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NEVER = "never"
_CONNINFO_PASSWORD = re.compile(r"(^|\s)(ssl)?password\s*=")


@dataclasses.dataclass(frozen=True)
class PublishSection:
    """A job's `publish:` section: the pgvector collection its committed table is published into.

    The database is named by exactly one of `conn_id`, `to_env` and `to`; a password is never in the job file.

    Attributes:
      collection: the collection's name, a plain lowercase identifier.
      schema: the collection's schema; None: the database's default.
      index: "hnsw", "ivfflat" or "none".
      halfvec: store 16-bit floats (`halfvec`) instead of `vector`.
      keep_missing: keep rows whose id the table no longer has.
      replace: build the collection anew and swap it in (another module, columns or vector type).
      rebuild_above: the share of an HNSW collection's rows above which a merge builds beside it, or
        "never"; None: the publish's default.
      conn_id: an Airflow connection holding the database (read by the DAG's publish task only).
      to_env: the name of an environment variable holding the database's connection URI.
      to: the database's connection URI without a password (libpq reads it from PGPASSWORD, ~/.pgpass or
        a service file).
    """

    collection: str
    schema: str | None = None
    index: str = "hnsw"
    halfvec: bool = False
    keep_missing: bool = False
    replace: bool = False
    rebuild_above: float | str | None = None
    conn_id: str | None = None
    to_env: str | None = None
    to: str | None = None

    def database_uri(self, environ: Mapping[str, str]) -> str:
        """The connection URI of `to`, or of the variable `to_env` names in `environ`.

        Raises:
          ConfigError: the section names an Airflow connection, or the variable is unset or empty.
        """
        if self.to is not None:
            return self.to
        if self.to_env is not None:
            uri = environ.get(self.to_env, "").strip()
            if not uri:
                raise ConfigError(
                    f"publish.to_env names the environment variable {self.to_env!r}, which is not set or empty."
                )
            return uri
        raise ConfigError(
            f"publish.conn_id names the Airflow connection {self.conn_id!r}, which only the DAG's publish task reads; "
            "to publish from the command, name the variable holding the database URI in publish.to_env."
        )

    def options(self, beam_args: Sequence[str] = (), replace: bool = False) -> Any:
        """The `pipelines.publish.options.PublishOptions` of this section (`replace` also when asked).

        Raises:
          ConfigError: an invalid schema, index or combination of options.
        """
        # The publish package brings psycopg: the DAGs import this module while Airflow parses them.
        from pipelines.publish.errors import PublishError
        from pipelines.publish.options import PublishOptions

        try:
            options = PublishOptions(
                schema=self.schema,
                halfvec=self.halfvec,
                index=self.index,
                keep_missing=self.keep_missing,
                replace=self.replace or replace,
                beam_args=tuple(beam_args),
            )
            if self.rebuild_above is not None:  # else the publish's default
                options = dataclasses.replace(options, rebuild_above=_share(self.rebuild_above))
            return options
        except PublishError as e:
            raise ConfigError(f"publish: {e}") from None


def publish_section(values: Any, where: str = "") -> PublishSection:
    """A `publish:` mapping of a job file as a `PublishSection`, its keys, types and database checked.

    Checks what needs no database library (the DAG files call it while Airflow parses them);
    `config_checks.validate` checks the collection's name and the options as the publish does.

    Args:
      values: the section's mapping.
      where: the job file, for messages.

    Raises:
      ConfigError: not a mapping, an unknown key, a wrong type, not exactly one database, or a `to`
        holding a password.
    """
    at = f" in {where}" if where else ""
    if not isinstance(values, Mapping):
        raise ConfigError(f"'publish'{at} must be a mapping with keys {', '.join(_PUBLISH_TYPES)}.")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    for key, value in values.items():
        if key not in _PUBLISH_TYPES:
            raise ConfigError(
                f"Unknown publish key {key!r}{at}; {suggest(key, list(_PUBLISH_TYPES))}"
                f"valid keys: {', '.join(_PUBLISH_TYPES)}."
            )
        if key == "rebuild_above":
            if value is not None and (
                value != _NEVER and (isinstance(value, bool) or not isinstance(value, int | float))
            ):
                raise type_error("publish.rebuild_above", f"a share such as 0.15, or {_NEVER!r}", value)
            continue
        expected = _PUBLISH_TYPES[key]
        if not (value is None and key != "collection") and (
            not isinstance(value, expected) or (isinstance(value, str) and not value.strip())
        ):
            raise type_error(f"publish.{key}", "true or false" if expected is bool else "a non-empty string", value)
    if "collection" not in values:
        raise ConfigError(f"publish{at} needs 'collection', the name of the collection to publish into.")
    named = [key for key in PUBLISH_DATABASE_KEYS if values.get(key) is not None]
    if len(named) != 1:
        raise ConfigError(
            f"publish{at} must name its database with exactly one of {', '.join(PUBLISH_DATABASE_KEYS)}"
            f"{', not ' + ' and '.join(named) if named else ''}: conn_id (an Airflow connection, for the DAGs), "
            "to_env (an environment variable holding the URI) or to (a URI without a password)."
        )
    if values.get("to_env") is not None and not _ENV_NAME.match(values["to_env"]):
        raise ConfigError(f"publish.to_env must be an environment variable name, got {values['to_env']!r}.")
    if values.get("to") is not None and _holds_password(values["to"]):
        raise ConfigError(
            f"publish.to{at} holds a password: a job file is no place for one. Name an environment variable "
            "holding the URI in publish.to_env, an Airflow connection in publish.conn_id, or leave the password "
            "to PGPASSWORD, ~/.pgpass or a PGSERVICE entry."
        )
    return PublishSection(**values)


_PUBLISH_TYPES: dict[str, type] = {
    field.name: bool if field.type in (bool, "bool") else str for field in dataclasses.fields(PublishSection)
}


def _share(value: float | str) -> float | None:
    """`rebuild_above`'s value for `PublishOptions`: a share, or None for "never"."""
    return None if value == _NEVER else float(value)


def _holds_password(conninfo: str) -> bool:
    """Whether a connection string holds a password: `user:password@` or `?password=` in a URI, `password=` else."""
    if "://" not in conninfo:
        return _CONNINFO_PASSWORD.search(conninfo) is not None
    parts = urllib.parse.urlsplit(conninfo)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    return ":" in parts.netloc.rpartition("@")[0] or any(key in query for key in ("password", "sslpassword"))
