"""Checking an incremental run's table: its counts against the scenario's, and its vectors bit for bit."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.incremental_scenario import COUNT_KEYS

MIN_FRESH_COSINE = 0.99999


@dataclasses.dataclass(frozen=True)
class TableView:
    """A committed table, read back: ids, content hashes, float32 vectors (row order), manifest."""

    ids: list[str]
    hashes: list[str]
    vectors: np.ndarray
    manifest: dict[str, Any]

    def rows(self) -> dict[str, int]:
        """Row id -> row number."""
        return {row: i for i, row in enumerate(self.ids)}


def read_back(output: str) -> TableView:
    """Reads a committed table back."""
    # Imported here: the embedding package imports Beam, which the result renderer does not need.
    import pyarrow as pa

    from pipelines.embedding import sinks

    table = sinks.read_table(output)
    column = table.column("embedding").combine_chunks()
    values = column.values if pa.types.is_fixed_size_list(column.type) else column.flatten()
    vectors = np.asarray(values.to_numpy(zero_copy_only=False), np.float32).reshape(len(column), -1)
    hashes = table.column("content_hash").to_pylist() if "content_hash" in table.column_names else [None] * len(column)
    return TableView(table.column("id").to_pylist(), hashes, vectors, sinks.read_table_manifest(output) or {})


def counts_of(view: TableView) -> dict[str, Any]:
    """A table's manifest counts that the scenario checks, and whether they balance."""
    counts = view.manifest.get("counts", {})
    return {key: counts.get(key) for key in (*COUNT_KEYS, "balanced")}


def count_mismatches(view: TableView, expected: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The counts (and table rows) that differ from the expected ones: key -> expected and got."""
    counts = counts_of(view)
    wrong = {k: {"expected": v, "got": counts.get(k)} for k, v in expected.items() if counts.get(k) != v}
    if counts.get("balanced") is not True:
        wrong["balanced"] = {"expected": True, "got": counts.get("balanced")}
    if len(view.ids) != expected["rows_written"]:
        wrong["table_rows"] = {"expected": expected["rows_written"], "got": len(view.ids)}
    return wrong


def text_sha256(text: str) -> str:
    """The `content_hash` of a text: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _bits(matrix: np.ndarray) -> np.ndarray:
    """A float32 matrix's bit patterns, to compare vectors bit for bit."""
    return np.ascontiguousarray(matrix, np.float32).view(np.uint32)


def verify(
    rows: Sequence[tuple[str, str]],
    view: TableView,
    reference: TableView,
    reference_rows: Sequence[tuple[str, str]],
    fresh: TableView | None,
    fresh_rows: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """Checks a reuse run's vectors.

    Every row whose text the reference run (run 1) embedded must hold exactly
    the reference's float32 bytes for that text; rows with equal texts must
    hold equal bytes; every other row is compared with a fresh embedding of
    its text (cosine, and bit-identity counted).
    """
    text_of = dict(rows)
    position = view.rows()
    missing = [r for r, _ in rows if r not in position]
    ref_position = reference.rows()
    ref_by_text = {text: ref_position[r] for r, text in reference_rows}
    old, new = [], []
    for r, text in rows:
        if r in position:
            (old if text in ref_by_text else new).append(r)
    mine = _bits(view.vectors)
    theirs = _bits(reference.vectors)
    old_rows = np.array([position[r] for r in old], np.int64)
    old_ref = np.array([ref_by_text[text_of[r]] for r in old], np.int64)
    identical = (mine[old_rows] == theirs[old_ref]).all(axis=1) if old else np.zeros(0, bool)
    by_text: dict[str, list[int]] = {}
    for r, text in rows:
        if r in position:
            by_text.setdefault(text, []).append(position[r])
    groups = [g for g in by_text.values() if len(g) > 1]
    equal_groups = sum(bool((mine[g] == mine[g[0]]).all()) for g in groups)
    result: dict[str, Any] = {
        "rows_missing": len(missing),
        "reused_rows_checked": len(old),
        "reused_rows_bit_identical": int(identical.sum()),
        "duplicate_groups": len(groups),
        "duplicate_groups_bit_identical": int(equal_groups),
        "content_hash_mismatches": sum(
            h != text_sha256(text_of[r]) for r, h in zip(view.ids, view.hashes) if r in text_of
        ),
        "new_rows_checked": 0,
        "new_rows_min_cosine": None,
        "new_rows_bit_identical": None,
    }
    if new and fresh is not None:
        fresh_position = fresh.rows()
        fresh_by_text = {text: fresh_position[r] for r, text in fresh_rows if r in fresh_position}
        new = [r for r in new if text_of[r] in fresh_by_text]
        a = view.vectors[[position[r] for r in new]]
        b = fresh.vectors[[fresh_by_text[text_of[r]] for r in new]]
        cos = harness.cosines(a, b)
        result.update(
            new_rows_checked=len(new),
            new_rows_min_cosine=float(cos.min()) if len(new) else None,
            new_rows_bit_identical=int((_bits(a) == _bits(b)).all(axis=1).sum()),
        )
    return result


def _verdict(check: dict[str, Any], new_expected: int) -> bool:
    return (
        check["rows_missing"] == 0
        and check["reused_rows_bit_identical"] == check["reused_rows_checked"]
        and check["duplicate_groups_bit_identical"] == check["duplicate_groups"]
        and check["content_hash_mismatches"] == 0
        and check["new_rows_checked"] == new_expected
        and (new_expected == 0 or (check["new_rows_min_cosine"] or 0) >= MIN_FRESH_COSINE)
    )


def verify_run(
    rows: Sequence[tuple[str, str]],
    view: TableView,
    reference: TableView,
    reference_rows: Sequence[tuple[str, str]],
    fresh: TableView | None,
    fresh_rows: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """`verify`'s checks of a reuse run, with `ok`: whether all of them hold (every new row compared)."""
    check = verify(rows, view, reference, reference_rows, fresh, fresh_rows)
    old_texts = {text for _, text in reference_rows}
    check["ok"] = _verdict(check, sum(text not in old_texts for _, text in rows))
    return check
