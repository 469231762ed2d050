"""StageChunks: Beam workers copy the table's chunks into the publish's work table, each chunk exactly once.

Each chunk is one transaction: it first records the chunk in `hub_embed_staged_chunks` (work table,
chunk), then binary-COPYs its rows (psycopg 3, vectors by pgvector's adapter), then commits. A chunk
already recorded (by a retried bundle, a second attempt running beside the first, or a publish killed
and run again) is skipped: its rows are there once. A transaction cut short leaves neither the record
nor the rows.

* build: every row of the chunk, as the collection will hold it.
* merge: the collection's rows of the chunk's ids are read first (content hash, passthrough values, and
  the SHA-256 of the vector's binary form, computed by the server); a row equal in all three is staged
  as its id and content hash only, any other row whole (`changed`).
"""

from __future__ import annotations

import dataclasses
import logging
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
from pipelines.publish.source import Chunk, read_chunk
from pipelines.publish.vectors import vector_digest, vector_value

METRICS_NAMESPACE = "hub_embed_publish"
_LOG = logging.getLogger("hub_embed")


@dataclasses.dataclass(frozen=True)
class StagedChunk:
    """What staging one chunk did.

    Attributes:
      chunk: the chunk's key.
      rows: its rows.
      changed: rows staged whole (build: all of them).
      skipped: it had been staged already.
    """

    chunk: str
    rows: int
    changed: int
    skipped: bool


def _columns(batch: pa.RecordBatch, passthrough: tuple[str, ...]) -> tuple[list, list, np.ndarray, list]:
    """A record batch's ids, content hashes, `[N, D]` vectors and passthrough rows."""
    vectors = batch.column("embedding")
    flat = vectors.flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, np.float32).reshape(len(batch), vectors.type.list_size)
    others = [batch.column(name).to_pylist() for name in passthrough]
    return (
        batch.column("id").to_pylist(),
        batch.column("content_hash").to_pylist(),
        matrix,
        list(zip(*others)) if others else [()] * len(batch),
    )


def stage_chunk(conn: psycopg.Connection[Any], plan: PublishPlan, chunk: Chunk) -> StagedChunk:
    """Stages one chunk in its own transaction, unless it is staged already.

    Raises:
      psycopg.Error: the database failed (the transaction is rolled back: nothing of the chunk stays).
    """
    layout = plan.layout
    chunks_table = catalogue.table(layout.schema, catalogue.STAGED_CHUNKS)
    with conn.transaction():
        claimed = conn.execute(
            sql.SQL(
                "INSERT INTO {} (work_table, chunk, rows) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1"
            ).format(chunks_table),
            [plan.work_table, chunk.key, chunk.rows],
        ).fetchone()
        if claimed is None:
            return StagedChunk(chunk.key, chunk.rows, 0, skipped=True)
        columns = ["id", "content_hash", "embedding", *layout.passthrough]
        batches = list(read_chunk(chunk, columns))
        if plan.mode == BUILD:
            changed = _copy_rows(conn, layout, plan.work_table, batches, plan.table.run_id)
        else:
            changed = _copy_differences(conn, layout, plan.work_table, batches)
    return StagedChunk(chunk.key, chunk.rows, changed, skipped=False)


def _copy_rows(
    conn: psycopg.Connection[Any], layout: Layout, work_table: str, batches: list[pa.RecordBatch], run_id: str
) -> int:
    """COPYs every row into a build table; returns the row count."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        layout.table(work_table), layout.identifiers(layout.columns)
    )
    rows = 0
    with conn.cursor().copy(statement) as copy:
        copy.set_types(["text", "text", layout.vector_type, *["text"] * len(layout.passthrough), "text"])
        for batch in batches:
            ids, hashes, vectors, others = _columns(batch, layout.passthrough)
            for i, row_id in enumerate(ids):
                copy.write_row((row_id, hashes[i], vector_value(layout.vector_type, vectors[i]), *others[i], run_id))
            rows += len(ids)
    return rows


def _published(conn: psycopg.Connection[Any], layout: Layout, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """The collection's (content hash, vector digest, passthrough values) of those of `ids` it holds."""
    select = sql.SQL("SELECT id, content_hash, sha256({}(embedding)){} FROM {} WHERE id = ANY(%s)").format(
        sql.SQL(f"{layout.vector_type}_send"),
        sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c)) for c in layout.passthrough),
        layout.table(),
    )
    return {row[0]: (row[1], bytes(row[2]), tuple(row[3:])) for row in conn.execute(select, [ids])}


def _copy_differences(
    conn: psycopg.Connection[Any], layout: Layout, work_table: str, batches: list[pa.RecordBatch]
) -> int:
    """COPYs every row's id and content hash into a stage table, rows that differ from the collection whole."""
    ids = [row_id for batch in batches for row_id in batch.column("id").to_pylist()]
    published = _published(conn, layout, ids)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        layout.table(work_table), layout.identifiers(layout.stage_columns())
    )
    empty = (None,) * len(layout.passthrough)
    changed = 0
    with conn.cursor().copy(statement) as copy:
        copy.set_types(["text", "bool", "text", layout.vector_type, *["text"] * len(layout.passthrough)])
        for batch in batches:
            batch_ids, hashes, vectors, others = _columns(batch, layout.passthrough)
            for i, row_id in enumerate(batch_ids):
                old = published.get(row_id)
                same = (
                    old is not None
                    and old[0] == hashes[i]
                    and old[2] == tuple(others[i])
                    and old[1] == vector_digest(layout.vector_type, vectors[i])
                )
                if same:
                    copy.write_row((row_id, False, hashes[i], None, *empty))
                else:
                    copy.write_row((row_id, True, hashes[i], vector_value(layout.vector_type, vectors[i]), *others[i]))
                    changed += 1
    return changed


class StageChunks(beam.DoFn):
    """Stages each `Chunk` it gets (see the module docstring); outputs a `StagedChunk` each."""

    def __init__(self, plan: PublishPlan):
        self._plan = plan

    def setup(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_staged")
        self._changed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_changed")

    def process(self, chunk: Chunk) -> Iterator[StagedChunk]:
        target = self._plan.cfg.target
        try:
            if self._conn is None or self._conn.closed:
                self._conn = database.connect(target, self._plan.cfg.options.connect_timeout_s)
            staged = stage_chunk(self._conn, self._plan, chunk)
        except psycopg.Error as e:
            self._close()
            raise PublishFailed(target.scrub(f"staging {chunk.key} into {self._plan.collection} failed: {e}")) from None
        if not staged.skipped:
            self._rows.inc(staged.rows)
            self._changed.inc(staged.changed)
        _LOG.debug("staged %s (%d rows, %d changed)", staged.chunk, staged.rows, staged.changed)
        yield staged

    def teardown(self) -> None:
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
