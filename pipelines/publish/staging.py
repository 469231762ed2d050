"""StageChunks: Beam workers copy the table's chunks into the publish's work table, each chunk exactly once.

Each chunk is one transaction: it first records the chunk in `hub_embed_staged_chunks` (work table,
chunk, rows staged), then binary-COPYs its rows (psycopg 3, vectors by pgvector's adapter), then
commits. A chunk already recorded (by a retried bundle, a second attempt running beside the first,
or a publish killed and run again) is skipped: its rows are there once. A transaction cut short
leaves neither the record nor the rows.

* build: every row of the chunk, as the collection will hold it.
* merge: only the rows the collection's snapshot does not hold as they are (new ids, other content
  hash or passthrough values; see `pipelines.publish.snapshot`); their vectors are read only then,
  from the row groups that hold them.
  Every chunk also reports the digests of its ids, so that the commit can tell the ids the table
  no longer has.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from pipelines.publish import catalogue, database
from pipelines.publish.errors import PublishFailed
from pipelines.publish.layout import Layout
from pipelines.publish.plan import BUILD, PublishPlan
from pipelines.publish.snapshot import Snapshot, content_digests, id_digests
from pipelines.publish.source import Chunk, read_chunk, read_rows
from pipelines.publish.vectors import vector_value

METRICS_NAMESPACE = "hub_embed_publish"
_LOG = logging.getLogger("hub_embed")


@dataclasses.dataclass(frozen=True)
class StagedChunk:
    """What staging one chunk did.

    Attributes:
      chunk: the chunk's key.
      rows: its rows.
      changed: its rows staged (build: all of them; merge: those that differ from the collection).
      skipped: it had been staged already.
      seen: the digests of its ids (merge only).
      seconds: the seconds staging it took.
    """

    chunk: str
    rows: int
    changed: int
    skipped: bool
    seen: np.ndarray | None = None
    seconds: float = 0.0


def _columns(batch: pa.RecordBatch | pa.Table, passthrough: tuple[str, ...]) -> tuple[list, list, list]:
    """A record batch's (or table's) ids, content hashes and passthrough rows."""
    others = [batch.column(name).to_pylist() for name in passthrough]
    return (
        batch.column("id").to_pylist(),
        batch.column("content_hash").to_pylist(),
        list(zip(*others)) if others else [()] * len(batch),
    )


def _vectors(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """A record batch's (or table's) `[N, D]` float32 vectors."""
    column = batch.column("embedding")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(batch), -1)


def _claim(conn: psycopg.Connection[Any], plan: PublishPlan, chunk: Chunk, rows: int) -> bool:
    """Records the chunk as staged (in the caller's transaction); False when it already is."""
    chunks_table = catalogue.table(plan.layout.schema, catalogue.STAGED_CHUNKS)
    claimed = conn.execute(
        sql.SQL(
            "INSERT INTO {} (work_table, chunk, rows) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1"
        ).format(chunks_table),
        [plan.work_table, chunk.key, rows],
    ).fetchone()
    return claimed is not None


def _copy(
    conn: psycopg.Connection[Any], layout: Layout, table: str, columns: tuple[str, ...], rows: Iterator[tuple]
) -> None:
    """Binary COPY of `rows` into `table`'s `columns` (types: text, but the vector column)."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        layout.table(table), layout.identifiers(columns)
    )
    with conn.cursor().copy(statement) as copy:
        copy.set_types([layout.vector_type if c == "embedding" else "text" for c in columns])
        for row in rows:
            copy.write_row(row)


def stage_chunk(
    conn: psycopg.Connection[Any], plan: PublishPlan, chunk: Chunk, snapshot: Snapshot | None
) -> StagedChunk:
    """Stages one chunk in its own transaction, unless it is staged already.

    Args:
      conn: a connection from `database.connect`.
      plan: the publish.
      chunk: the chunk.
      snapshot: the collection's snapshot (merge); None for a build.

    Raises:
      psycopg.Error: the database failed (the transaction is rolled back: nothing of the chunk stays).
    """
    layout, vector_type = plan.layout, plan.layout.vector_type
    if plan.mode == BUILD:
        with conn.transaction():
            if not _claim(conn, plan, chunk, chunk.rows):
                return StagedChunk(chunk.key, chunk.rows, chunk.rows, skipped=True)
            run_id = plan.table.run_id
            for batch in read_chunk(chunk, ["id", "content_hash", "embedding", *layout.passthrough]):
                ids, hashes, others = _columns(batch, layout.passthrough)
                vectors = _vectors(batch)
                rows = (
                    (i, hashes[n], vector_value(vector_type, vectors[n]), *others[n], run_id) for n, i in enumerate(ids)
                )
                _copy(conn, layout, plan.work_table, layout.columns, rows)
        return StagedChunk(chunk.key, chunk.rows, chunk.rows, skipped=False)
    assert snapshot is not None
    keys = pa.Table.from_batches(list(read_chunk(chunk, ["id", "content_hash", *layout.passthrough])))
    seen = id_digests(keys.column("id"))
    contents = content_digests(keys.column("content_hash"), [keys.column(name) for name in layout.passthrough])
    changed = np.flatnonzero(~snapshot.unchanged(seen, contents))
    with conn.transaction():
        if not _claim(conn, plan, chunk, len(changed)):
            return StagedChunk(chunk.key, chunk.rows, len(changed), skipped=True, seen=seen)
        if len(changed):  # only these rows' vectors are read, from the row groups that hold them
            vectors = _vectors(read_rows(chunk, ["embedding"], changed))
            ids, hashes, others = _columns(keys.take(pa.array(changed)), layout.passthrough)
            rows = ((ids[n], hashes[n], vector_value(vector_type, vectors[n]), *others[n]) for n in range(len(ids)))
            _copy(conn, layout, plan.work_table, layout.stage_columns(), rows)
    return StagedChunk(chunk.key, chunk.rows, len(changed), skipped=False, seen=seen)


class StageChunks(beam.DoFn):
    """Stages each `Chunk` it gets (see the module docstring); outputs a `StagedChunk` each.

    Its side input is the collection's `Snapshot` (merge), or None (build).
    """

    def __init__(self, plan: PublishPlan):
        self._plan = plan

    def setup(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._changed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_staged")

    def process(self, chunk: Chunk, snapshot: Snapshot | None) -> Iterator[StagedChunk]:
        target, start = self._plan.cfg.target, time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = database.connect(target, self._plan.cfg.options.connect_timeout_s)
            staged = stage_chunk(self._conn, self._plan, chunk, snapshot)
        except psycopg.Error as e:
            self._close()
            raise PublishFailed(target.scrub(f"staging {chunk.key} into {self._plan.collection} failed: {e}")) from None
        staged = dataclasses.replace(staged, seconds=time.monotonic() - start)
        if not staged.skipped:
            self._rows.inc(staged.rows)
            self._changed.inc(staged.changed)
        _LOG.debug("staged %s (%d rows, %d staged)", staged.chunk, staged.rows, staged.changed)
        yield staged

    def teardown(self) -> None:
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
