"""The text shown for a row: its text column when the table holds one, or its line of a text input file.

A table stores ids, vectors, content hashes and passthrough columns, not always the text. A txt
input's ids are `<file>:<line>`, and so are the dead letters' sources of txt and jsonl inputs:
their lines are read back from the input file when it can still be read.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from apache_beam.io.filesystems import FileSystems

from pipelines.publish.source import SourceTable

EXCERPT_CHARS = 300
# Input files read back for one report at most (each streamed up to the last line it needs).
MAX_FILES = 20


def excerpt(text: str | None, chars: int = EXCERPT_CHARS) -> str | None:
    """`text` cut to `chars` characters (with an ellipsis), whitespace collapsed."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def text_column(table: SourceTable) -> str | None:
    """The passthrough column holding the embedded text (the job's `text_field`), or None."""
    name = table.config.get("text_field")
    return name if isinstance(name, str) and name in table.passthrough else None


def row_texts(table: SourceTable, ids: Sequence[str], fields: dict[str, list]) -> list[str | None]:
    """The text of each row, in the order of `ids` (None where it cannot be shown)."""
    column = text_column(table)
    if column is not None and column in fields:
        return [excerpt(value) for value in fields[column]]
    if table.config.get("input_format") == "txt":
        lines = source_lines(ids)
        return [lines.get(row_id) for row_id in ids]
    return [None] * len(ids)


def source_lines(sources: Iterable[str]) -> dict[str, str]:
    """The line each `<file>:<line>` source names (excerpts), for the files that can be read; others are left out."""
    wanted: dict[str, set[int]] = collections.defaultdict(set)
    for source in sources:
        path, _, number = source.rpartition(":")
        if path and number.isdigit():
            wanted[path].add(int(number))
    found: dict[str, str] = {}
    for path in sorted(wanted)[:MAX_FILES]:
        numbers = wanted[path]
        last = max(numbers)
        try:
            with FileSystems.open(path) as f:  # compression from the name, as the job read it
                for n, raw in enumerate(f, 1):
                    if n in numbers:
                        text = raw.decode("utf-8", "replace").removeprefix("\ufeff").rstrip("\r\n")
                        found[f"{path}:{n}"] = excerpt(text) or ""
                    if n >= last:
                        break
        except Exception:  # noqa: BLE001 - an input moved or gone: its rows show their ids only
            continue
    return found
