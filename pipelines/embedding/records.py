"""The elements that flow through an embedding pipeline, and how failures and tallies are tagged.

Every stage emits good elements on its main output, `Failure`s on `FAILURES`,
and, where it decides where rows go, `tally` elements on `TALLIES`.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, NamedTuple

import apache_beam as beam

FAILURES = "failures"
TALLIES = "tallies"
METRICS_NAMESPACE = "hub_embed"
_MAX_ERROR_CHARS = 1000


class Stage(str, enum.Enum):
    """Where a record failed."""

    READ = "read"  # the file or line could not be read or parsed
    DEDUPE = "dedupe"  # another record has the same id
    VALIDATE = "validate"  # empty, too long, or not text
    DECODE = "decode"  # the image could not be decoded
    EMBED = "embed"  # the module rejected the input or returned NaN/inf


class Record(NamedTuple):
    """One input record.

    Attributes:
      id: the record's id (`--id-field` value, else its position `source`).
      payload: the text; for images first the file path, then the decoded
        `[H, W, 3]` pixels (`preprocess.decode_pixels`).
      source: where the record came from: `<file>:<n>` (n = 1-based line or
        record number) or, for images, the file path.
      passthrough: values of the `--passthrough` columns, in their order.
      content_hash: hex digest of exactly what the module is fed for this
        record (see `pipelines.embedding.content`); set by `Preprocess`.
    """

    id: str
    payload: Any
    source: str
    passthrough: tuple = ()
    content_hash: str = ""


def position(record: Record | Failure) -> tuple[str, int]:
    """(file, n) of a `<file>:<n>` source; image sources are plain paths (n = 0).

    The order "first by file, then by position" that picks the record kept
    among duplicate ids, and the one of identical contents that is embedded.
    """
    path, _, n = record.source.rpartition(":")
    return (path, int(n)) if n.isdigit() else (record.source, 0)


class ContentGroup(NamedTuple):
    """The records of one run that share a content: one module call embeds them all.

    Attributes:
      content_hash: their content hash.
      payload: what the module is fed: the text; for images first the file
        path, then the decoded `[H, W, 3]` pixels; after the module
        call, the embedding.
      rows: the records, without their payloads, first by file and position.
    """

    content_hash: str
    payload: Any
    rows: tuple[Record, ...]

    def embedded(self, vector: Any) -> list[Record]:
        """Every row with `vector` as its payload."""
        return [row._replace(payload=vector) for row in self.rows]

    def failed(self, stage: Stage, error: str | BaseException) -> list[beam.pvalue.TaggedOutput]:
        """One dead letter per row, each with the group's reason."""
        return [failed(row.id, row.source, stage, error) for row in self.rows]


@functools.cache
def _counter(name: str) -> Any:
    """The Beam counter `hub_embed/<name>` (it finds the running step's metrics when incremented, so one serves all)."""
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


def tally(name: str, n: int) -> beam.pvalue.TaggedOutput:
    """Adds `n` to the run's count `name`: the Beam counter `hub_embed/<name>`, and a `TALLIES` element
    whose sums the commit checks and records (see `sinks`)."""
    _counter(name).inc(n)
    return beam.pvalue.TaggedOutput(TALLIES, (name, n))


class Failure(NamedTuple):
    """A record that failed, one row of the dead-letter table."""

    id: str
    source: str
    stage: str
    error: str


def failed(record_id: str, source: str, stage: Stage, error: str | BaseException) -> beam.pvalue.TaggedOutput:
    """Returns a `Failure` tagged for a DoFn's `FAILURES` output.

    Exceptions become `"<Type>: <message>"`. Whitespace is collapsed and long
    messages keep their head and tail (TensorFlow puts the actual error after
    a long node trace), so one bad record cannot bloat the dead-letter table.
    """
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    error = " ".join(error.split())
    if len(error) > _MAX_ERROR_CHARS:
        half = _MAX_ERROR_CHARS // 2
        error = f"{error[:half]} ... {error[-half:]}"
    return beam.pvalue.TaggedOutput(FAILURES, Failure(record_id, source, stage.value, error))
