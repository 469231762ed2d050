"""What a merge compares the table with: the collection's rows as digests of their ids and of their content.

A row is unchanged when the collection holds its id with the same content hash and passthrough values:
the collection holds vectors of the table's module, signature and output (the catalogue checks it), so
the same content has the same vector (bit for bit when the table reused the published table's vectors,
as incremental runs do). A digest is the first 16 bytes of the SHA-256 of the UTF-8 id, or of the UTF-8
content hash followed by each passthrough value (0x01, its UTF-8 bytes, 0x02; NULL: 0x00). The server
computes the collection's digests in one scan (32 bytes per row come back); the workers compute the
table's the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from pipelines.publish.layout import Layout

DIGEST_BYTES = 16
DIGEST_DTYPE = f"S{DIGEST_BYTES}"
_FETCH_ROWS = 100_000
_DIGEST = operator.methodcaller("digest")
# How a passthrough value is framed in a content digest: 0x01, its UTF-8 bytes, 0x02; NULL: 0x00.
_OPEN, _CLOSE, _NULL = b"\x01", b"\x02", b"\x00"


def _digests(payloads: Iterable[bytes]) -> np.ndarray:
    """The first `DIGEST_BYTES` of the SHA-256 of each payload, as a byte-string array (no Python loop per row)."""
    joined = b"".join(map(_DIGEST, map(hashlib.sha256, payloads)))
    full = np.frombuffer(joined, np.uint8).reshape(-1, hashlib.sha256().digest_size)
    return np.ascontiguousarray(full[:, :DIGEST_BYTES]).view(DIGEST_DTYPE).ravel()


def id_digests(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The digests of a column of ids, as a byte-string array."""
    return _digests(ids.cast(pa.binary()).to_pylist())


def content_digests(
    content_hashes: pa.Array | pa.ChunkedArray, passthrough: Sequence[pa.Array | pa.ChunkedArray]
) -> np.ndarray:
    """The digests of what decides whether a row changed: its content hash and passthrough values, per row."""
    parts = [content_hashes.cast(pa.binary())]
    for column in passthrough:
        framed = pc.binary_join_element_wise(_OPEN, column.cast(pa.string()).cast(pa.binary()), _CLOSE, b"")
        parts.append(pc.fill_null(framed, _NULL))
    payloads = pc.binary_join_element_wise(*parts, b"") if passthrough else parts[0]
    return _digests(payloads.to_pylist())


def _sql_id_digest() -> sql.Composable:
    return sql.SQL("substring(sha256(convert_to(id, 'UTF8')) from 1 for {})").format(sql.Literal(DIGEST_BYTES))


def _sql_content_digest(passthrough: Sequence[str]) -> sql.Composable:
    values: list[sql.Composable] = [sql.SQL("convert_to(content_hash, 'UTF8')")]
    values += [
        sql.SQL("coalesce('\\x01'::bytea || convert_to({}, 'UTF8') || '\\x02'::bytea, '\\x00'::bytea)").format(
            sql.Identifier(name)
        )
        for name in passthrough
    ]
    return sql.SQL("substring(sha256({}) from 1 for {})").format(
        sql.SQL(" || ").join(values), sql.Literal(DIGEST_BYTES)
    )


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The collection's rows, as sorted id digests and their content digests (same order).

    Attributes:
      ids: the id digests, sorted.
      contents: their content digests.
      read_s: the seconds reading it took.
    """

    ids: np.ndarray
    contents: np.ndarray
    read_s: float = 0.0

    @classmethod
    def of(cls, ids: np.ndarray, contents: np.ndarray, read_s: float = 0.0) -> Snapshot:
        """A snapshot of unsorted digests."""
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], contents[order], read_s)

    def unchanged(self, ids: np.ndarray, contents: np.ndarray) -> np.ndarray:
        """Which of the rows (id and content digests) the collection holds as they are."""
        if not len(self.ids):
            return np.zeros(len(ids), bool)
        where = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return (self.ids[where] == ids) & (self.contents[where] == contents)

    def missing(self, seen: np.ndarray) -> np.ndarray:
        """The id digests of the collection that are not among `seen` (the table's)."""
        return np.setdiff1d(self.ids, seen)


def read(conn: psycopg.Connection[Any], layout: Layout) -> Snapshot:
    """The collection's snapshot: one scan, the digests computed by the server."""
    statement = sql.SQL("SELECT {} || {} FROM {}").format(
        _sql_id_digest(), _sql_content_digest(layout.passthrough), layout.table()
    )
    start, chunks = time.monotonic(), []
    with conn.transaction(), conn.cursor(name="hub_embed_snapshot", binary=True) as cursor:
        cursor.itersize = _FETCH_ROWS
        cursor.execute(statement)
        while rows := cursor.fetchmany(_FETCH_ROWS):
            chunks.append(b"".join(row[0] for row in rows))
    both = np.frombuffer(b"".join(chunks), dtype=f"S{2 * DIGEST_BYTES}")
    pairs = both.view(np.uint8).reshape(len(both), 2 * DIGEST_BYTES)
    ids = np.ascontiguousarray(pairs[:, :DIGEST_BYTES]).view(DIGEST_DTYPE).ravel()
    contents = np.ascontiguousarray(pairs[:, DIGEST_BYTES:]).view(DIGEST_DTYPE).ravel()
    return Snapshot.of(ids, contents, time.monotonic() - start)


def delete(conn: psycopg.Connection[Any], layout: Layout, digests: np.ndarray, table: str | None = None) -> int:
    """Deletes the rows whose id digests are `digests` (in the caller's transaction); returns how many.

    Args:
      conn: the connection.
      layout: the collection's layout.
      digests: the id digests.
      table: the table to delete from (default: the collection).
    """
    if not len(digests):
        return 0
    statement = sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(layout.table(table), _sql_id_digest())
    # From the array's buffer: a numpy bytes scalar drops trailing zero bytes, a digest may end with some.
    raw = [row.tobytes() for row in np.ascontiguousarray(digests).view(np.uint8).reshape(len(digests), DIGEST_BYTES)]
    return conn.execute(statement, [raw]).rowcount
