"""`prepare(cfg)`: every check a publish makes before it writes anything, and the plan it then follows.

A plan says how the table reaches the collection:

* `build`: the collection is new, or `--replace` was asked: workers load the table into a work table
  beside it, its key and index are built there, and one transaction swaps it in.
* `merge`: the collection holds vectors of the same space: workers stage what differs, and one
  transaction inserts, updates and deletes.

Its work table's name carries a key derived from what the work depends on (the table's run, the
layout, the index for a build; the collection's last publish too for a merge): a publish run again
after a kill finds the chunks it staged and stages only the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from pipelines.embedding import sinks
from pipelines.publish import catalogue, database, source
from pipelines.publish.catalogue import CatalogueEntry
from pipelines.publish.database import Database
from pipelines.publish.errors import PublishError
from pipelines.publish.index import IndexSpec, index_spec
from pipelines.publish.layout import Layout
from pipelines.publish.options import PublishConfig
from pipelines.publish.source import Chunk, SourceTable
from pipelines.publish.vector_space import VectorSpace

BUILD = "build"
MERGE = "merge"


@dataclasses.dataclass(frozen=True)
class PublishPlan:
    """What a publish does, settled before it writes.

    Attributes:
      cfg: the publish's config.
      table: the checked source table.
      space: the table's vector space.
      database: the target's schema and versions.
      layout: the collection's tables and columns.
      index: the index the collection gets.
      mode: `BUILD` or `MERGE`.
      work_table: the work table's name.
      chunks: the table's chunks, each staged once.
      publish_run: this publish's id.
      base: the collection's catalogue entry when planned (None: no collection yet).
    """

    cfg: PublishConfig
    table: SourceTable
    space: VectorSpace
    database: Database
    layout: Layout
    index: IndexSpec
    mode: str
    work_table: str
    chunks: tuple[Chunk, ...]
    publish_run: str
    base: CatalogueEntry | None = None

    @property
    def collection(self) -> str:
        """`schema.collection`, for messages."""
        return f"{self.layout.schema}.{self.layout.collection}"

    @property
    def lock_key(self) -> str:
        """The advisory lock one publish of this collection holds while it runs."""
        return f"hub-embed:publish:{self.collection}"

    @property
    def commit_lock_key(self) -> str:
        """The advisory lock held by the transaction that changes the collection."""
        return f"hub-embed:commit:{self.collection}"


def prepare(cfg: PublishConfig) -> PublishPlan:
    """Checks the table, the database and the collection, and plans the publish. Writes nothing.

    Raises:
      PublishError: the table is missing, uncommitted or corrupt; the database cannot be reached, refuses the
        credentials or lacks pgvector; the schema is missing or not writable; the collection holds another
        vector space, columns or vector type (without `replace`), or its name is taken by another table.
    """
    table = source.open_table(cfg.table)
    space = VectorSpace.of_table(table.metadata, table.config)
    options = cfg.options
    index = index_spec(options, table.dimension, table.rows)
    with database.connect(cfg.target, options.connect_timeout_s) as conn:
        db = database.check(conn, cfg.target, options.schema)
        layout = Layout(db.schema, cfg.collection, options.vector_type, table.dimension, table.passthrough)
        entry = catalogue.read(conn, db.schema, cfg.collection)
        exists = catalogue.table_exists(conn, db.schema, cfg.collection)
        conn.rollback()
    where = f"collection {db.schema}.{cfg.collection} in {cfg.target.display}"
    if exists and entry is None:
        raise PublishError(
            f"{where}: a table of that name exists and is not a hub-embed collection (no catalogue entry)."
        )
    mode = MERGE if exists and not options.replace else BUILD
    if mode == MERGE and entry is not None:
        _check_compatible(where, entry, space, layout)
    chunks = tuple(source.chunks(table))
    key = _work_key(mode, layout, table, chunks, index, entry)
    work_table = layout.work_table("build" if mode == BUILD else "stage", key)
    base = entry if exists else None
    return PublishPlan(cfg, table, space, db, layout, index, mode, work_table, chunks, sinks.new_run_id(), base)


def _check_compatible(where: str, entry: CatalogueEntry, space: VectorSpace, layout: Layout) -> None:
    """Refuses to merge a table into a collection of another vector space, columns or vector type."""
    differ = entry.space.differences(space)
    if differ:
        raise PublishError(
            f"{where} holds vectors of another space ({', '.join(differ)} differ): it holds {entry.space.describe()}; "
            f"the table was made with {space.describe()}. Nothing was written. Publish with --replace to rebuild "
            "the collection from this table."
        )
    if tuple(entry.columns) != layout.passthrough:
        raise PublishError(
            f"{where} has the passthrough columns {list(entry.columns)}; the table has {list(layout.passthrough)}. "
            "Nothing was written. Publish with --replace to rebuild the collection with the table's columns."
        )
    if entry.vector_type != layout.vector_type:
        raise PublishError(
            f"{where} stores {entry.vector_type}; this publish asks for {layout.vector_type}. Nothing was written. "
            f"Publish with{'' if layout.vector_type == 'halfvec' else 'out'} --halfvec to keep it, or with --replace "
            "to rebuild it."
        )


def _work_key(
    mode: str,
    layout: Layout,
    table: SourceTable,
    chunks: tuple[Chunk, ...],
    index: IndexSpec,
    entry: CatalogueEntry | None,
) -> str:
    """What the work table's content depends on, hashed: equal keys mean the staged chunks can be kept."""
    parts: dict[str, Any] = {
        "mode": mode,
        "layout": dataclasses.asdict(layout),
        "run_id": table.run_id,
        "chunks": [chunk.key for chunk in chunks],
    }
    if mode == BUILD:
        parts["index"] = index.to_dict()
    else:  # a merge stages what differs from the collection as its last publish left it
        parts["base"] = entry.publish_run if entry else None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
