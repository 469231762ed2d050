"""A collection's tables: the collection itself, and the work tables a publish fills beside it, with their SQL.

    collection          id text PRIMARY KEY, content_hash text, embedding vector(D) | halfvec(D),
                        <passthrough columns> text, source_run_id text
    hub_embed_build_*   the same columns, no key yet: a new or replaced collection, built beside the old one
    hub_embed_stage_*   id, content_hash, embedding, <passthrough>: the rows a merge inserts or updates

Work tables are named `hub_embed_<build|stage>_<8 hex of the collection name>_<12 hex of the work's key>`,
so the ones a killed publish left are found and reused (same key) or dropped (another key).
"""

from __future__ import annotations

import dataclasses
import hashlib

from psycopg import sql

from pipelines.publish.errors import PublishError
from pipelines.publish.options import RESERVED_PREFIX

# The collection's own columns; passthrough columns may not take these names.
SYSTEM_COLUMNS = ("id", "content_hash", "embedding", "source_run_id")
WORK_KINDS = ("build", "stage")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a collection lives and what its columns are.

    Attributes:
      schema: its schema.
      collection: its table's name.
      vector_type: "vector" or "halfvec".
      dimension: the vectors' dimension.
      passthrough: the passthrough columns, in the table's order.
    """

    schema: str
    collection: str
    vector_type: str
    dimension: int
    passthrough: tuple[str, ...]

    def __post_init__(self) -> None:
        clash = sorted(set(self.passthrough) & set(SYSTEM_COLUMNS))
        if clash:
            raise PublishError(
                f"the table's passthrough columns {clash} clash with the collection's own {SYSTEM_COLUMNS}."
            )
        long = [name for name in self.passthrough if len(name.encode()) > 63]
        if long:
            raise PublishError(f"passthrough column names longer than PostgreSQL's 63 bytes: {long}.")

    @property
    def columns(self) -> tuple[str, ...]:
        """The collection's columns, in order."""
        return ("id", "content_hash", "embedding", *self.passthrough, "source_run_id")

    @property
    def index_name(self) -> str:
        """The name of the collection's vector index."""
        return f"{self.collection}_embedding_idx"

    @property
    def key_name(self) -> str:
        """The name of the collection's primary key."""
        return f"{self.collection}_pkey"

    def table(self, name: str | None = None) -> sql.Composed:
        """`schema.name` (default: the collection) as a quoted SQL name."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name or self.collection))

    def vector_column_type(self) -> sql.SQL:
        """`vector(D)` or `halfvec(D)`."""
        return sql.SQL(f"{self.vector_type}({int(self.dimension)})")

    def work_table(self, kind: str, key: str) -> str:
        """The name of a work table of this collection (`kind`: "build" or "stage")."""
        return f"{self.work_prefix(kind)}{key[:12]}"

    def work_prefix(self, kind: str) -> str:
        """What every work table of `kind` of this collection's name starts with."""
        assert kind in WORK_KINDS
        digest = hashlib.sha256(f"{self.schema}.{self.collection}".encode()).hexdigest()[:8]
        return f"{RESERVED_PREFIX}{kind}_{digest}_"

    def create_build_table(self, name: str) -> sql.Composed:
        """A table shaped as the collection, without its primary key (added once it is loaded)."""
        return self._create_table(name, with_run_id=True)

    def create_stage_table(self, name: str) -> sql.Composed:
        """The merge's staging table: the rows to insert or update, shaped as the collection without its run id."""
        return self._create_table(name, with_run_id=False)

    def _create_table(self, name: str, with_run_id: bool) -> sql.Composed:
        passthrough = [sql.SQL("{} text").format(sql.Identifier(c)) for c in self.passthrough]
        columns = [
            sql.SQL("id text NOT NULL"),
            sql.SQL("content_hash text NOT NULL"),
            sql.SQL("embedding {} NOT NULL").format(self.vector_column_type()),
            *passthrough,
            *([sql.SQL("source_run_id text NOT NULL")] if with_run_id else []),
        ]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.table(name), sql.SQL(", ").join(columns))

    def stage_columns(self) -> tuple[str, ...]:
        """The staging table's columns, in order."""
        return ("id", "content_hash", "embedding", *self.passthrough)

    def identifiers(self, names: tuple[str, ...], prefix: str | None = None) -> sql.Composed:
        """`a, b, c` (or `p.a, p.b, p.c`) as quoted SQL names."""
        if prefix is None:
            return sql.SQL(", ").join(sql.Identifier(n) for n in names)
        return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)
