"""Credentials of module handles: found in config values (and refused), added from an Airflow connection at run time.

The standard library and `pipelines.hub.redaction` only: the DAG files import it while Airflow parses them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from pipelines.hub.redaction import redact

MODULE_HANDLE_ENV = "HUB_EMBED_MODULE_HANDLE"
"""The variable of the embed process's environment that carries a handle built with a connection's credentials."""

SECRET_BEAM_OPTIONS = ("s3_secret_access_key", "s3_session_token", "azure_connection_string")
"""Beam options whose value is itself a credential."""

HTTP_SCHEMES = ("http", "https")


class CredentialsError(ValueError):
    """A value holds credentials where they would be stored or logged, or a connection cannot authenticate a handle."""


class ModuleConnection(Protocol):
    """What `authenticated_handle` reads of an Airflow connection (`airflow.sdk.Connection`)."""

    @property
    def host(self) -> str | None:
        """The host its credentials are for, if it names one."""
        ...

    @property
    def login(self) -> str | None:
        """The user name."""
        ...

    @property
    def password(self) -> str | None:
        """The password."""
        ...

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The connection's `extra` JSON as a dict."""
        ...


def secrets_in(value: str) -> list[str]:
    """What in `value` is a credential: a `user[:password]@` part, query parameters. Empty for anything else.

    Only URLs (`scheme://...`) can hold them. Every query parameter that
    `redact` drops counts as a secret (`tf-hub-format` is kept), because a
    signed URL's token is indistinguishable from any other parameter.

    Args:
      value: a config value: a module handle, a path, a database URI, anything.

    Returns:
      Descriptions of its credentials, never their values (e.g. "a user name
      or password (user:password@)", "query parameters ['token']").
    """
    if "://" not in value:
        return []
    authority = value.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    found = ["a user name or password (user:password@)"] if "@" in authority else []
    query = value.split("#", 1)[0].partition("?")[2]
    try:
        kept = urllib.parse.urlsplit(redact(value)).query
    except ValueError:  # too malformed to parse: `redact` keeps no query of such a URL
        kept = ""
    dropped = [k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)]
    for k, _ in urllib.parse.parse_qsl(kept, keep_blank_values=True):
        dropped.remove(k)
    if dropped:
        found.append(f"query parameters {sorted(set(dropped))}")
    return found


def find_secrets(values: Any, where: str = "") -> Iterator[tuple[str, str, list[str]]]:
    """Every string in a nested mapping/list that holds credentials, as (key path, value, what it holds).

    Args:
      values: a config's values (mappings, lists and scalars).
      where: the key path of `values` itself, for the returned key paths.
    """
    if isinstance(values, str):
        found = secrets_in(values)
        if found:
            yield where, values, found
    elif isinstance(values, Mapping):
        for key, value in values.items():
            yield from find_secrets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(values, (list, tuple)):
        for index, value in enumerate(values):
            yield from find_secrets(value, f"{where}[{index}]")


def authenticated_handle(handle: str, connection: ModuleConnection, conn_id: str) -> str:
    """`handle` with the connection's credentials: its login and password as `user:password@`, its extra's `query`.

    The connection's `extra` may hold `{"query": {"token": "..."}}`, query
    parameters appended to the handle (a signed URL's token). When the
    connection names a host, the handle must be on that host, so its
    credentials never go to another server.

    Args:
      handle: a credential-free `http(s)://` module handle.
      connection: the Airflow connection.
      conn_id: its id, for messages.

    Returns:
      The authenticated handle; a secret: it goes to the embed process's
      environment and nowhere else.

    Raises:
      CredentialsError: the handle is not http(s) or holds credentials of its
        own, the connection is for another host, or its extra's `query` is not
        a mapping of names to strings. Messages never hold a secret.
    """
    shown = redact(handle)
    parts = urllib.parse.urlsplit(handle)
    if parts.scheme not in HTTP_SCHEMES:
        raise CredentialsError(
            f"Connection {conn_id!r} can authenticate only http(s):// module handles, not {shown!r}; "
            "gs:// and s3:// take their credentials from the workers' environment."
        )
    if secrets_in(handle):
        raise CredentialsError(
            f"Module handle {shown!r} holds credentials of its own; connection {conn_id!r} adds them."
        )
    if connection.host:
        host = connection.host if "://" in connection.host else f"//{connection.host}"
        expected = urllib.parse.urlsplit(host).hostname
        if expected != parts.hostname:
            raise CredentialsError(
                f"Connection {conn_id!r} is for host {expected!r}, but module handle {shown!r} is on "
                f"{parts.hostname!r}; a connection's credentials are sent only to its own host."
            )
    query = connection.extra_dejson.get("query") or {}
    if not isinstance(query, Mapping) or not all(isinstance(v, str) for v in query.values()):
        raise CredentialsError(
            f"Connection {conn_id!r}: extra 'query' must map query parameter names to strings, "
            f'e.g. {{"query": {{"token": "..."}}}}.'
        )
    userinfo = ""
    if connection.login:
        userinfo = urllib.parse.quote(connection.login, safe="")
        if connection.password:
            userinfo += ":" + urllib.parse.quote(connection.password, safe="")
        userinfo += "@"
    params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + [(str(k), v) for k, v in query.items()]
    return urllib.parse.urlunsplit(parts._replace(netloc=userinfo + parts.netloc, query=urllib.parse.urlencode(params)))


def secret_values(connection: ModuleConnection) -> list[str]:
    """The connection's values to mask in logs: its password and its extra's query values."""
    query = connection.extra_dejson.get("query") or {}
    values = [connection.password] + (list(query.values()) if isinstance(query, Mapping) else [])
    return [v for v in values if isinstance(v, str) and v]
