"""The elements that flow through an embedding pipeline, and how failures are tagged.

Every stage emits good elements on its main output and `Failure`s on the
`FAILURES` output; the pipeline flattens all failure outputs into one
dead-letter table. Stages are named by `Stage` values, which end up in the
dead-letter table's `stage` column and in the `rows_failed_<stage>` counters.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import apache_beam as beam

FAILURES = "failures"
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
        float32 `[H, W, 3]` array.
      source: where the record came from: `<file>:<n>` (n = 1-based line or
        record number) or, for images, the file path.
      passthrough: values of the `--passthrough` columns, in their order.
    """

    id: str
    payload: Any
    source: str
    passthrough: tuple = ()


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
