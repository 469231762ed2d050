"""What a merge compares the table with: the collection's rows as digests of their ids and of their content.

A row is unchanged when the collection holds its id with the same content hash and passthrough values:
the collection holds vectors of the table's module, signature and output (the catalogue checks it), so
the same content has the same vector (bit for bit when the table reused the published table's vectors,
as incremental runs do). Digests are 16-byte BLAKE2b, sorted for lookup: 32 bytes per row, read once
per publish with one scan, and handed to every worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pipelines.publish.layout import Layout

DIGEST_BYTES = 16
_DTYPE = f"S{DIGEST_BYTES}"
_FETCH_ROWS = 50_000


def id_digest(row_id: str) -> bytes:
    """The digest of a row's id."""
    return hashlib.blake2b(row_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def content_digest(content_hash: str, passthrough: Sequence[str | None]) -> bytes:
    """The digest of what decides whether a row changed: its content hash and passthrough values."""
    digest = hashlib.blake2b(content_hash.encode(), digest_size=DIGEST_BYTES)
    for value in passthrough:
        digest.update(b"\x00" if value is None else b"\x01" + value.encode("utf-8", "surrogatepass") + b"\x02")
    return digest.digest()


def id_digests(ids: Iterable[str]) -> np.ndarray:
    """The digests of `ids`, as a byte-string array."""
    return np.array([id_digest(i) for i in ids], dtype=_DTYPE)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The collection's rows, as sorted id digests and their content digests (same order)."""

    ids: np.ndarray
    contents: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray, contents: np.ndarray) -> Snapshot:
        """A snapshot of unsorted digests."""
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], contents[order])

    def unchanged(self, ids: np.ndarray, contents: np.ndarray) -> np.ndarray:
        """Which of the rows (id and content digests) the collection holds as they are."""
        if not len(self.ids):
            return np.zeros(len(ids), bool)
        where = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return (self.ids[where] == ids) & (self.contents[where] == contents)


def read(conn: psycopg.Connection[Any], layout: Layout) -> Snapshot:
    """The collection's snapshot, read with one scan (a server-side cursor, `_FETCH_ROWS` rows at a time)."""
    statement = sql.SQL("SELECT id, content_hash{} FROM {}").format(
        sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c)) for c in layout.passthrough), layout.table()
    )
    ids, contents = [], []
    with conn.transaction(), conn.cursor(name="hub_embed_snapshot") as cursor:
        cursor.itersize = _FETCH_ROWS
        for row in cursor.execute(statement):
            ids.append(id_digest(row[0]))
            contents.append(content_digest(row[1], row[2:]))
    return Snapshot.of(np.array(ids, dtype=_DTYPE), np.array(contents, dtype=_DTYPE))


def missing(conn: psycopg.Connection[Any], layout: Layout, seen: np.ndarray) -> list[str]:
    """The collection's ids whose digests are not among `seen` (the table's), read in the caller's transaction."""
    rows = conn.execute(sql.SQL("SELECT id FROM {}").format(layout.table())).fetchall()
    ids = [row[0] for row in rows]
    if not ids:
        return []
    absent = ~np.isin(id_digests(ids), seen)
    return [row_id for row_id, gone in zip(ids, absent) if gone]
