"""The database a collection is published to: its connection string, kept apart from what may be shown.

A target is any libpq connection string (`postgresql://user@host:5432/db?sslmode=require`, or
`host=... dbname=...`). Its password (from the URI, or better from `PGPASSWORD`, `~/.pgpass` or a
`PGSERVICE` entry, which libpq reads itself) is used to connect and nowhere else: `Target.display`
is the string without it, and `scrub` removes it from any message before it is printed or raised.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping

from psycopg.conninfo import conninfo_to_dict

from pipelines.publish.errors import PublishError

# Connection parameters that hold secrets: never shown.
SECRET_KEYS = ("password", "sslpassword")
# Shown after the host and database, when set.
_SHOWN_OPTIONS = ("sslmode", "options", "application_name", "service")
_USERINFO = re.compile(r"(//[^/@:]*):[^@/]*@")


@dataclasses.dataclass(frozen=True)
class Target:
    """A database to publish to or search in.

    Attributes:
      conninfo: the connection string as given (may hold a password: never shown, logged or stored).
      display: the same without secrets, for messages and logs.
      secrets: the secret values in it, which `scrub` removes from any text.
    """

    conninfo: str = dataclasses.field(repr=False)
    display: str
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    def scrub(self, text: str) -> str:
        """`text` with every secret of this target replaced by `***`."""
        return scrub(text, self.secrets)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with each of `secrets` (longest first) replaced by `***`, and any `user:password@` part of a URL dropped."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO.sub(r"\1:***@", text)


def parse_target(conninfo: str) -> Target:
    """Checks a connection string's syntax and makes its displayable form.

    Args:
      conninfo: a `postgresql://` URI or a `key=value` connection string.

    Raises:
      PublishError: it cannot be parsed (the message never repeats it).
    """
    if not conninfo or not conninfo.strip():
        raise PublishError("--to must name a database: postgresql://USER@HOST:PORT/DBNAME")
    secrets = _secrets_in(conninfo)
    try:
        params = conninfo_to_dict(conninfo)
    except Exception as e:  # psycopg quotes the offending part of the string: scrub it
        raise PublishError(
            f"the database connection string cannot be parsed: {scrub(str(e), (conninfo, *secrets))}"
        ) from None
    for key in SECRET_KEYS:
        if params.get(key):
            secrets += (str(params[key]), urllib.parse.quote(str(params[key]), safe=""))
    return Target(conninfo, _display(params), tuple(dict.fromkeys(secrets)))


def _secrets_in(conninfo: str) -> tuple[str, ...]:
    """The password of a URI's `user:password@` part, raw and decoded, found without a full parse."""
    match = re.match(r"^[a-z]+://[^/@:]*:([^@/]*)@", conninfo)
    if not match or not match.group(1):
        return ()
    return (match.group(1), urllib.parse.unquote(match.group(1)))


def _display(params: Mapping[str, object]) -> str:
    """`postgresql://user@host:port/dbname?...` from parsed parameters, without secrets."""
    user = str(params.get("user") or "")
    host = str(params.get("host") or "")
    port = str(params.get("port") or "")
    query = {}
    if host.startswith("/") or "," in host:  # a socket directory or several hosts: a query parameter
        query["host"] = host
        host = ""
    netloc = (urllib.parse.quote(user, safe="") + "@" if user else "") + host + (f":{port}" if port else "")
    query.update({k: str(params[k]) for k in _SHOWN_OPTIONS if params.get(k)})
    dbname = urllib.parse.quote(str(params.get("dbname") or ""), safe="")
    suffix = "?" + urllib.parse.urlencode(query, safe="/,") if query else ""
    return f"postgresql://{netloc}/{dbname}{suffix}"
