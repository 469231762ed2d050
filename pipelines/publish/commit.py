"""The publish's commit: one transaction that makes the staged work the collection, so readers see old or new.

* build: the work table gets its primary key and vector index first (outside the swap, which then
  takes a moment), then one transaction grants it the old collection's table grants, drops the old
  collection if any, renames the work table and its indexes into place, and writes the catalogue.
* merge: one transaction deletes the collection's rows whose id the table lacks (unless
  `keep_missing`), updates the staged rows whose id it holds, inserts the others, rebuilds the
  index if another was asked for, drops the stage table and writes the catalogue. Its work is
  proportional to the rows that changed, not to the collection.
  When the collection has an HNSW index and more than `rebuild_above` of its rows are staged,
  the same transaction instead copies the unchanged rows and the staged ones into a new table,
  builds its key and index there, and swaps it in: cheaper than that many inserts into the graph.

Both first take the collection's commit lock and check that its catalogue entry is still the one
the publish was planned against: a publish committed by someone else in between fails this one
(run it again) rather than being overwritten. A commit retried after it succeeded finds its own
publish run in the catalogue and does nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pipelines.publish import catalogue, snapshot, table_extras, work
from pipelines.publish.catalogue import CatalogueEntry
from pipelines.publish.errors import PublishFailed
from pipelines.publish.index import IndexSpec
from pipelines.publish.plan import BUILD, PublishPlan
from pipelines.publish.snapshot import Snapshot

# An index build may use up to this much memory (maintenance_work_mem is raised to fit the graph, never lowered).
MAX_INDEX_MEMORY_MB = 2048
_LOG = logging.getLogger("hub_embed")


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What a publish did.

    Attributes:
      collection: `schema.collection`.
      mode: "build" or "merge".
      publish_run: the publish's id.
      source_run_id: the published table's run id.
      rows: the collection's rows after it.
      inserted: rows inserted (a build: all of them).
      updated: rows whose content hash or passthrough values changed (with them, their vector).
      deleted: rows whose id the table no longer has.
      unchanged: rows left as they were.
      index: the index (`IndexSpec.to_dict()`), None without one.
      index_build_s: seconds spent building the index (0 when it was kept).
      staged: rows the workers staged (a build: all of them; a merge: those that differ from the collection).
      seconds: where the publish's time went, per phase (see `PHASES`).
      rebuilt: a merge that built the merged collection beside the old one (see `rebuild_above`).
    """

    collection: str
    mode: str
    publish_run: str
    source_run_id: str
    rows: int
    inserted: int
    updated: int
    deleted: int
    unchanged: int
    index: dict[str, Any] | None
    index_build_s: float
    staged: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    rebuilt: bool = False

    def changes(self) -> dict[str, Any]:
        """The catalogue's `last_changes` (`rebuilt` only when true)."""
        return {
            "mode": self.mode,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "index_build_s": round(self.index_build_s, 3),
            "staged": self.staged,
            "seconds": {phase: round(s, 3) for phase, s in self.seconds.items()},
            **({"rebuilt": True} if self.rebuilt else {}),
        }

    @classmethod
    def from_entry(cls, entry: CatalogueEntry, schema: str) -> PublishResult:
        """The result a catalogue entry records of the publish that wrote it."""
        changes = entry.last_changes
        return cls(
            collection=f"{schema}.{entry.collection}",
            mode=str(changes.get("mode", "")),
            publish_run=entry.publish_run,
            source_run_id=entry.source_run_id,
            rows=entry.row_count,
            inserted=int(changes.get("inserted", 0)),
            updated=int(changes.get("updated", 0)),
            deleted=int(changes.get("deleted", 0)),
            unchanged=int(changes.get("unchanged", 0)),
            index=entry.index.to_dict() if entry.index else None,
            index_build_s=float(changes.get("index_build_s", 0.0)),
            staged=int(changes.get("staged", 0)),
            seconds={str(k): float(v) for k, v in (changes.get("seconds") or {}).items()},
            rebuilt=bool(changes.get("rebuilt", False)),
        )


def commit(
    conn: psycopg.Connection[Any],
    plan: PublishPlan,
    seen: np.ndarray | None = None,
    base: Snapshot | None = None,
    before: Mapping[str, float] | None = None,
) -> PublishResult:
    """Makes the staged work the collection (see the module docstring); returns what changed.

    Args:
      conn: a connection from `database.connect`.
      plan: the publish.
      seen: the digests of the table's ids (a merge: ids the table lacks are deleted).
      base: the collection's snapshot the merge staged against (read again when absent).
      before: seconds of the phases before the commit (`snapshot`, `stage`), recorded with the commit's own.

    Raises:
      PublishFailed: chunks are missing, rows do not add up, or the collection changed since the publish was planned.
      psycopg.Error: the database failed (the transaction is rolled back).
    """
    schema = plan.layout.schema
    entry = catalogue.read(conn, schema, plan.layout.collection)
    conn.rollback()
    if entry is not None and entry.publish_run == plan.publish_run:  # a retried commit: it is done
        return PublishResult.from_entry(entry, schema)
    staged = work.check_complete(conn, plan)
    conn.rollback()
    clock = _Clock(dict(before or {}))
    try:
        if plan.mode == BUILD:
            return _build(conn, plan, staged, clock)
        return _merge(conn, plan, np.zeros(0, snapshot.DIGEST_DTYPE) if seen is None else seen, base, staged, clock)
    except BaseChanged:
        if plan.mode != BUILD:  # a merge's staged differences are of no use to a publish planned from now on
            with conn.transaction():
                work.drop(conn, plan, plan.work_table)
        raise


# The phases a publish times: before the commit (Beam steps), and in it.
PHASES = {
    "snapshot": "reading the collection's digests (a merge)",
    "stage": "staging chunks, summed over the workers (reading, comparing, COPY)",
    "key": "adding the work table's primary key (a build)",
    "delete": "deleting the rows the table lacks (a merge)",
    "update": "updating the staged rows whose id the collection holds (a merge; index upkeep included)",
    "insert": "inserting the other staged rows (a merge; index upkeep included)",
    "copy": "copying the unchanged and the staged rows into the new table (a merge rebuilt beside the old one)",
    "commit": "the rest of the commit: locks, checks, ANALYZE, the swap or the stage table's drop, the catalogue",
}


class _Clock:
    """Seconds per phase (`PHASES`), added up as the commit runs."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds
        self._timed_here: set[str] = set()  # the phases timed during the commit (not those before it)
        self._start = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start
            self._timed_here.add(name)

    def done(self, index_s: float) -> dict[str, float]:
        """The phases' seconds, `commit` being the commit's time not spent in another phase or the index build."""
        timed = sum(self.seconds[name] for name in self._timed_here)
        return {**self.seconds, "commit": max(0.0, time.monotonic() - self._start - timed - index_s)}


class BaseChanged(PublishFailed):
    """Another publish committed to the collection after this one was planned."""


def _lock_and_check_base(conn: psycopg.Connection[Any], plan: PublishPlan) -> CatalogueEntry | None:
    """Takes the commit lock; fails unless the collection is as the plan found it. Returns its entry."""
    layout = plan.layout
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [plan.commit_lock_key])
    entry = catalogue.read(conn, layout.schema, layout.collection)
    exists = catalogue.table_exists(conn, layout.schema, layout.collection)
    now = entry.publish_run if entry is not None and exists else None
    planned = plan.base.publish_run if plan.base is not None else None
    if now != planned:
        raise BaseChanged(
            f"{plan.collection} changed while this publish ran (publish {now!r} committed; this one was planned "
            f"against {planned!r}); nothing was committed: run the publish again."
        )
    return entry if exists else None


def _index_memory(conn: psycopg.Connection[Any], plan: PublishPlan) -> None:
    """Raises maintenance_work_mem (for this transaction) to fit the index being built, up to MAX_INDEX_MEMORY_MB."""
    bytes_per_value = 2 if plan.layout.vector_type == "halfvec" else 4
    per_row = plan.layout.dimension * bytes_per_value + plan.index.m * 2 * 10 + 64
    needed_mb = min(MAX_INDEX_MEMORY_MB, int(plan.table.rows * per_row * 1.25 / 2**20) + 64)
    row = conn.execute("SELECT setting::bigint / 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'").fetchone()
    if row is not None and int(row[0]) < needed_mb:
        conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{needed_mb}MB")))


def _create_index(conn: psycopg.Connection[Any], plan: PublishPlan, table: str, name: str) -> float:
    """Builds the plan's index on `table` (in the caller's transaction); returns the seconds it took."""
    if plan.index.method == "none":
        return 0.0
    _index_memory(conn, plan)
    start = time.monotonic()
    conn.execute(plan.index.create_sql(plan.layout.schema, table, name))
    seconds = time.monotonic() - start
    _LOG.info("%s index on %s built in %.1fs", plan.index.method, plan.collection, seconds)
    return seconds


def _swap_in(conn: psycopg.Connection[Any], plan: PublishPlan, table: str, drop_old: bool) -> None:
    """Makes `table` (with its `<table>_pkey` and `<table>_idx`) the collection (in the caller's transaction)."""
    layout = plan.layout
    if drop_old:
        conn.execute(sql.SQL("DROP TABLE {}").format(layout.table()))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(layout.table(table), sql.Identifier(layout.collection)))
    renames = [(f"{table}_pkey", layout.key_name)]
    renames += [(f"{table}_idx", layout.index_name)] if plan.index.method != "none" else []
    for old, new in renames:
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(layout.table(old), sql.Identifier(new)))


def _add_key(conn: psycopg.Connection[Any], plan: PublishPlan, table: str) -> None:
    """Adds `table`'s primary key on id (in the caller's transaction).

    Raises:
      PublishFailed: the rows hold an id twice.
    """
    try:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (id)").format(
                plan.layout.table(table), sql.Identifier(f"{table}_pkey")
            )
        )
    except psycopg.errors.UniqueViolation:
        raise PublishFailed(f"{plan.table.display} holds an id twice; nothing was committed.") from None


def _build(conn: psycopg.Connection[Any], plan: PublishPlan, staged: int, clock: _Clock) -> PublishResult:
    layout, work_table = plan.layout, plan.work_table
    key, index_name = f"{work_table}_pkey", f"{work_table}_idx"
    with clock.phase("key"), conn.transaction():
        has_key = conn.execute(
            "SELECT 1 FROM pg_constraint WHERE conname = %s AND connamespace = %s::regnamespace",
            [key, f'"{layout.schema}"'],
        ).fetchone()
        if not has_key:
            _add_key(conn, plan, work_table)
    with conn.transaction():
        index_s = _create_index(conn, plan, work_table, index_name)
    conn.execute(sql.SQL("ANALYZE {}").format(layout.table(work_table)))
    conn.commit()
    with conn.transaction():
        _lock_and_check_base(conn, plan)
        if plan.base is not None:
            table_extras.grant_again(conn, layout, work_table)
        _swap_in(conn, plan, work_table, drop_old=plan.base is not None)
        work.drop(conn, plan, work_table)  # the chunk records (the table is the collection now)
        return _record(
            conn, plan, staged, clock, index_s, rows_before=0, inserted=plan.table.rows, updated=0, deleted=0
        )


def _merge(
    conn: psycopg.Connection[Any],
    plan: PublishPlan,
    seen: np.ndarray,
    base: Snapshot | None,
    staged: int,
    clock: _Clock,
) -> PublishResult:
    layout, stage = plan.layout, plan.layout.table(plan.work_table)
    values = ("content_hash", "embedding", *layout.passthrough)
    with conn.transaction():
        entry = _lock_and_check_base(conn, plan)
        conn.execute(sql.SQL("ANALYZE {}").format(stage))
        if rebuild_cheaper(plan, entry, staged):
            blockers = table_extras.swap_blockers(conn, layout)
            if not blockers:
                return _merge_beside(conn, plan, entry, seen, base, staged, clock)
            _LOG.info("%s: %d rows staged; merging in place, since %s", plan.collection, staged, "; ".join(blockers))
        deleted = _delete_missing(conn, plan, seen, base, clock)
        with clock.phase("update"):
            updated = _update(conn, plan, values)
        with clock.phase("insert"):
            inserted = _insert(conn, plan, values)
        index_s = _replace_index(conn, plan, entry.index if entry else None)
        work.drop(conn, plan, plan.work_table)
        return _record(
            conn, plan, staged, clock, index_s,
            rows_before=entry.row_count if entry else 0, inserted=inserted, updated=updated, deleted=deleted,
        )  # fmt: skip


def rebuild_cheaper(plan: PublishPlan, entry: CatalogueEntry | None, staged: int) -> bool:
    """Whether a merge builds the merged collection beside the old one rather than writing rows in place.

    True when the collection is to have an HNSW index and more than `rebuild_above` of its rows are
    staged: each staged row costs an insert into the graph on disk, several times a row of a build.
    """
    share = plan.cfg.options.rebuild_above
    if share is None or entry is None or plan.index.method != "hnsw" or not staged:
        return False
    return staged > share * entry.row_count


def _merge_beside(
    conn: psycopg.Connection[Any],
    plan: PublishPlan,
    entry: CatalogueEntry | None,
    seen: np.ndarray,
    base: Snapshot | None,
    staged: int,
    clock: _Clock,
) -> PublishResult:
    """A merge, in the caller's transaction, that builds the merged collection beside the old one and swaps it in.

    The new table gets the collection's rows the stage table does not replace (their run id kept),
    less those the table lacks (unless `keep_missing`), then the staged rows; then its key and index.
    Its counts are those of an in-place merge of the same stage table.
    """
    layout, stage = plan.layout, plan.layout.table(plan.work_table)
    beside = layout.work_table("build", plan.work_table.removeprefix(layout.work_prefix("stage")))
    columns = layout.identifiers(layout.columns)
    staged_columns = layout.identifiers(layout.stage_columns())
    with clock.phase("copy"):
        conn.execute(layout.create_build_table(beside))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} c WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.id = c.id)"
            ).format(layout.table(beside), columns, layout.identifiers(layout.columns, "c"), layout.table(), stage)
        )
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} s WHERE EXISTS (SELECT 1 FROM {} c WHERE c.id = s.id)").format(
                stage, layout.table()
            )
        ).fetchone()
        updated = int(row[0]) if row else 0
        conn.execute(
            sql.SQL("INSERT INTO {} ({}, source_run_id) SELECT {}, %s FROM {}").format(
                layout.table(beside), staged_columns, staged_columns, stage
            ),
            [plan.table.run_id],
        )
    deleted = _delete_missing(conn, plan, seen, base, clock, table=beside)
    with clock.phase("key"):
        _add_key(conn, plan, beside)
    index_s = _create_index(conn, plan, beside, f"{beside}_idx")
    conn.execute(sql.SQL("ANALYZE {}").format(layout.table(beside)))
    table_extras.grant_again(conn, layout, beside)
    _swap_in(conn, plan, beside, drop_old=True)
    work.drop(conn, plan, plan.work_table)
    result = _record(
        conn, plan, staged, clock, index_s,
        rows_before=entry.row_count if entry else 0, inserted=staged - updated, updated=updated, deleted=deleted,
        rebuilt=True,
    )  # fmt: skip
    _LOG.info("%s: %d rows staged; merged beside the old collection and swapped in", plan.collection, staged)
    return result


def _delete_missing(
    conn: psycopg.Connection[Any],
    plan: PublishPlan,
    seen: np.ndarray,
    base: Snapshot | None,
    clock: _Clock,
    table: str | None = None,
) -> int:
    """Deletes from `table` (default: the collection) the collection's ids the table lacks, unless `keep_missing`."""
    with clock.phase("delete"):
        if plan.cfg.options.keep_missing:
            return 0
        missing = (base or snapshot.read(conn, plan.layout)).missing(seen)
        return snapshot.delete(conn, plan.layout, missing, table=table)


def _update(conn: psycopg.Connection[Any], plan: PublishPlan, values: tuple[str, ...]) -> int:
    """Updates the collection's rows that the stage table holds with other values; returns how many."""
    layout, stage = plan.layout, plan.layout.table(plan.work_table)
    return int(
        conn.execute(
            sql.SQL(
                "UPDATE {} c SET {}, source_run_id = %s FROM {} s WHERE c.id = s.id AND ({}) IS DISTINCT FROM ({})"
            ).format(
                layout.table(),
                sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(sql.Identifier(v)) for v in values),
                stage,
                layout.identifiers(values, "c"),
                layout.identifiers(values, "s"),
            ),
            [plan.table.run_id],
        ).rowcount
    )


def _insert(conn: psycopg.Connection[Any], plan: PublishPlan, values: tuple[str, ...]) -> int:
    """Inserts the stage table's rows whose id the collection lacks; returns how many."""
    layout, stage = plan.layout, plan.layout.table(plan.work_table)
    return int(
        conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}, source_run_id) SELECT {}, %s FROM {} s WHERE NOT EXISTS (SELECT 1 FROM {} c WHERE c.id = s.id)"
            ).format(
                layout.table(),
                layout.identifiers(("id", *values)),
                layout.identifiers(("id", *values), "s"),
                stage,
                layout.table(),
            ),
            [plan.table.run_id],
        ).rowcount
    )


def _replace_index(conn: psycopg.Connection[Any], plan: PublishPlan, built: IndexSpec | None) -> float:
    """Rebuilds the collection's index when another one is asked for (in the merge's transaction)."""
    if not plan.index.rebuild_needed(built):
        return 0.0
    layout = plan.layout
    fresh = f"{layout.index_name}_new"
    seconds = _create_index(conn, plan, layout.collection, fresh)
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(layout.table(layout.index_name)))
    if plan.index.method != "none":
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(layout.table(fresh), sql.Identifier(layout.index_name))
        )
    return seconds


def _record(
    conn: psycopg.Connection[Any],
    plan: PublishPlan,
    staged: int,
    clock: _Clock,
    index_s: float,
    *,
    rows_before: int,
    inserted: int,
    updated: int,
    deleted: int,
    rebuilt: bool = False,
) -> PublishResult:
    """What the publish did, written to the catalogue in the commit's transaction; returns it.

    The collection ends with `rows_before - deleted + inserted` rows (a build starts from none), and
    the table's rows neither inserted nor updated are unchanged.
    """
    result = PublishResult(
        plan.collection, plan.mode, plan.publish_run, plan.table.run_id, rows_before - deleted + inserted,
        inserted=inserted, updated=updated, deleted=deleted, unchanged=plan.table.rows - inserted - updated,
        index=_index_dict(plan.index), index_build_s=index_s, staged=staged, seconds=clock.done(index_s),
        rebuilt=rebuilt,
    )  # fmt: skip
    catalogue.write(conn, plan.layout.schema, _entry(plan, result))
    return result


def _index_dict(index: IndexSpec) -> dict[str, Any] | None:
    return index.to_dict() if index.method != "none" else None


def _entry(plan: PublishPlan, result: PublishResult) -> CatalogueEntry:
    return CatalogueEntry(
        collection=plan.layout.collection,
        space=plan.space,
        metric=plan.index.metric,
        vector_type=plan.layout.vector_type,
        columns=plan.layout.passthrough,
        index=plan.index if plan.index.method != "none" else None,
        source_table=plan.table.display,
        source_run_id=plan.table.run_id,
        publish_run=plan.publish_run,
        row_count=result.rows,
        last_changes=result.changes(),
    )
