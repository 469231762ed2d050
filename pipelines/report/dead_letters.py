"""A table's dead letters: counts per stage and reason, with a few examples of each."""

from __future__ import annotations

import collections
import dataclasses
import re

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding import sinks
from pipelines.hub.redaction import redact
from pipelines.publish.source import SourceTable
from pipelines.report.texts import excerpt, source_lines

EXAMPLES = 3
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One example: the record's id, where it came from, its error, and what it held (when it can be read back)."""

    id: str
    source: str
    error: str
    payload: str | None


@dataclasses.dataclass(frozen=True)
class ReasonGroup:
    """The dead letters of one stage that failed for one reason."""

    stage: str
    reason: str
    count: int
    examples: tuple[DeadLetter, ...]


@dataclasses.dataclass(frozen=True)
class DeadLetters:
    """Every dead letter of a table, grouped; `total` is their count."""

    total: int
    groups: tuple[ReasonGroup, ...]

    @property
    def by_stage(self) -> dict[str, int]:
        """Dead letters per stage."""
        counts: collections.Counter[str] = collections.Counter()
        for group in self.groups:
            counts[group.stage] += group.count
        return dict(counts)


def reason(error: str) -> str:
    """An error's reason: its message with quoted values and numbers blanked, so alike errors group together."""
    text = _NUMBER.sub("N", _QUOTED.sub("'…'", error))
    return excerpt(text, 120) or ""


def read_dead_letters(table: SourceTable) -> DeadLetters:
    """Reads the dead-letter table the manifest names, one row group at a time."""
    manifest = sinks.read_table_manifest(table.path) or {}
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    examples: dict[tuple[str, str], list[tuple[str, str, str]]] = collections.defaultdict(list)
    for entry in manifest.get("error_files") or []:
        path = FileSystems.join(table.path, entry["path"])
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=["id", "source", "stage", "error"]):
                for row_id, source, stage, error in zip(*(batch.column(i).to_pylist() for i in range(4))):
                    key = (stage or "", reason(error or ""))
                    counts[key] += 1
                    if len(examples[key]) < EXAMPLES:
                        examples[key].append((row_id or "", source or "", error or ""))
    payloads = source_lines(source for kept in examples.values() for _, source, _ in kept)
    groups = [
        ReasonGroup(
            stage,
            why,
            n,
            tuple(
                DeadLetter(redact(i), redact(s), excerpt(e) or "", payloads.get(s))
                for i, s, e in examples[(stage, why)]
            ),
        )
        for (stage, why), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return DeadLetters(sum(counts.values()), tuple(groups))
