"""Content keys: the hash of what the module is fed for a row, and the keyed join that finds who needs a module call.

The join (`JoinContent`) groups a run's rows by content hash with a reuse table's
vectors; why, and what a key covers: docs/design/embedding.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from pipelines.embedding.model_spec import ModelSpec
from pipelines.embedding.records import TALLIES, ContentGroup, Record, position, tally

HASH_FUNCTION = "sha256"
IMAGE_PREPROCESSING = "pillow-exif-rgb-over-white-bilinear-unit-scale/1"
MISSES = "misses"


def text_hash(text: str) -> str:
    """The content hash of a text: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def image_hash(data: bytes, image_size: tuple[int, int]) -> str:
    """The content hash of an image file resized to `image_size`: SHA-256 of the preprocessing line + the bytes."""
    digest = hashlib.sha256(_image_line(image_size))
    digest.update(data)
    return digest.hexdigest()


def _image_line(image_size: tuple[int, int]) -> bytes:
    height, width = image_size
    return f"{IMAGE_PREPROCESSING} {height}x{width}\n".encode()


def scheme(spec: ModelSpec) -> dict[str, str]:
    """The table metadata entry `content_hash`: the hash function and exactly what it covers."""
    if spec.kind == "image":
        height, width = spec.resize_to
        covers = f"the line '{_image_line(spec.resize_to).decode().strip()}\\n', then the image file's bytes"
        preprocessing = f"{IMAGE_PREPROCESSING} to {height}x{width}"
    else:
        covers = "the UTF-8 bytes of the validated text, exactly as the module is fed it"
        preprocessing = "whitespace tokens and their count" if spec.tokenized else "text"
    return {"function": HASH_FUNCTION, "covers": covers, "preprocessing": preprocessing}


class _Resolve(beam.DoFn):
    """One content: its rows take the reused vector, or go to the module as one `ContentGroup`."""

    def process(self, element: tuple[str, Iterable[Any]]) -> Iterator[Any]:
        content_hash, values = element
        rows, vector = [], None
        for value in values:  # the rows (Records) and at most one reused vector (bytes) of this content
            if isinstance(value, bytes):
                vector = value
            else:
                rows.append(value)
        if not rows:  # a vector of the reuse table that no row of this run needs
            return
        rows.sort(key=position)
        if vector is not None:
            yield tally("rows_reused", len(rows))
            if len(rows) > 1:
                yield tally("rows_deduplicated", len(rows) - 1)
            for row in rows:
                yield row._replace(payload=vector)
            return
        payload = rows[0].payload
        yield beam.pvalue.TaggedOutput(
            MISSES, ContentGroup(content_hash, payload, tuple(r._replace(payload=None) for r in rows))
        )


class JoinContent(beam.PTransform):
    """Joins rows with reusable vectors by content hash.

    Input: a dict with `rows` (`Record`s with `content_hash`) and `reused`
    (`(content_hash, vector bytes)` pairs, one per content; empty when nothing
    may be reused). Both sides meet in one `GroupByKey` on the hash (a
    hand-made `CoGroupByKey`: the value's type tells the sides apart, which
    spares every element CoGroupByKey's tagging and untagging steps).

    Returns:
      A `DoOutputsTuple`: `.reused` (rows whose payload is now the reused
      vector), `.misses` (one `ContentGroup` per content the module must
      embed) and `.tallies` (`rows_reused`, `rows_deduplicated`).
    """

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.pvalue.DoOutputsTuple:
        keyed = inputs["rows"] | "ByContent" >> beam.Map(_keyed)
        return (
            (keyed, inputs["reused"])
            | "BothSides" >> beam.Flatten()
            | "Join" >> beam.GroupByKey()
            | "Resolve" >> beam.ParDo(_Resolve()).with_outputs(MISSES, TALLIES, main="reused")
        )


def _keyed(record: Record) -> tuple[str, Record]:
    return record.content_hash, record
