"""The report's table sample: the rows whose ids hash lowest, read from real tables of the real pipeline."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipelines.embedding import sinks
from pipelines.publish.source import open_table
from pipelines.report.errors import ReportError
from pipelines.report.table_sample import read_sample
from tests.fixtures.postgres import embed_table

ROWS = [
    (f"r{i}", f"row {i} says {'cats' if i % 2 else 'dogs'} and {i * 13 % 7}", "en" if i % 3 else "de")
    for i in range(90)
]


@pytest.fixture(scope="module")
def tables(tiny, tmp_path_factory):
    """The rows in a table of 7-row groups, and a third of them in a table of one row group."""
    root = tmp_path_factory.mktemp("report-sample")
    return (
        embed_table(root / "groups", tiny.text, ROWS, rows_per_group=7),
        embed_table(root / "third", tiny.text, ROWS[::3]),
    )


def _lowest(ids: list[str], k: int) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(i.encode()).digest())[:k]


def _rows(table: str) -> dict[str, dict]:
    return {row["id"]: row for row in sinks.read_table(table).to_pylist()}


def test_the_sample_is_the_ids_that_hash_lowest_with_their_own_vectors_and_fields(tables):
    table = tables[0]
    sample = read_sample(table, rows=25)
    assert sample.ids == _lowest([r[0] for r in ROWS], 25)
    assert sample.sampled is True
    assert sample.vectors.dtype == np.float32 and sample.vectors.shape == (25, sample.table.dimension)
    assert set(sample.fields) == {"content_hash", "lang"}
    rows = _rows(table)
    for i, row_id in enumerate(sample.ids):
        np.testing.assert_array_equal(sample.vectors[i], np.asarray(rows[row_id]["embedding"], np.float32))
        assert sample.fields["lang"][i] == rows[row_id]["lang"]
        assert sample.fields["content_hash"][i] == rows[row_id]["content_hash"]
    third = read_sample(tables[1], rows=4)
    assert third.ids == _lowest([r[0] for r in ROWS[::3]], 4)


def test_two_tables_sample_their_common_ids_alike(tables):
    whole, third = tables
    third_ids = set(read_sample(third, rows=1000).ids)
    from_whole = read_sample(whole, rows=60).ids
    from_third = read_sample(third, rows=60).ids
    # Every id of the smaller sample that the larger table holds, and that hashes below its largest pick, is in both.
    cutoff = hashlib.sha256(from_whole[-1].encode()).digest()
    assert [i for i in from_third if hashlib.sha256(i.encode()).digest() <= cutoff] == [
        i for i in from_whole if i in third_ids
    ]


def test_a_sample_larger_than_the_table_is_the_whole_table(tables):
    sample = read_sample(open_table(tables[0]), rows=500)
    assert sample.sampled is False
    assert sample.ids == _lowest([r[0] for r in ROWS], len(ROWS))
    assert read_sample(tables[1], rows=len(ROWS) // 3).sampled is False


def test_given_ids_are_read_exactly_and_absent_ones_left_out(tables):
    groups = tables[0]
    asked = ["r5", "r77", "r0", "no-such-id", "r42"]
    sample = read_sample(groups, ids=asked)
    assert sample.ids == _lowest(["r5", "r77", "r0", "r42"], 4)
    rows = _rows(groups)
    for i, row_id in enumerate(sample.ids):
        np.testing.assert_array_equal(sample.vectors[i], np.asarray(rows[row_id]["embedding"], np.float32))
    assert read_sample(groups, ids=[]).vectors.shape == (0, sample.table.dimension)


def test_a_missing_table_or_an_empty_sample_is_refused(tables, tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        read_sample(str(tmp_path / "nowhere"))
    with pytest.raises(ReportError, match="at least 1 row, not 0"):
        read_sample(tables[0], rows=0)
