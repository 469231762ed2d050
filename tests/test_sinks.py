"""Sinks: Arrow layout, part files, counts, error budget, and the atomic commit protocol."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.embedding import commit, pipeline, sinks
from pipelines.embedding.config import SinkConfig
from pipelines.embedding.records import Failure, Record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 3
METADATA = {"module": "m", "dimension": DIM}


def _records(n: int, prefix: str = "r") -> list[Record]:
    return [Record(f"{prefix}{i}", np.full(DIM, i, np.float32), f"f:{i}", (f"p{i}",), f"{i:064x}") for i in range(n)]


def _failures(n: int) -> list[Failure]:
    return [Failure(f"bad{i}", f"f:{100 + i}", "validate", "empty or whitespace-only text") for i in range(n)]


def _schema(sequence: bool = False) -> pa.Schema:
    return sinks.table_schema(DIM, sequence, ["extra"], METADATA)


def write(output, records, failures, rows_in, run_id="20260101T000000Z-aaaaaaaa", sequence=False, tallies=None, **sink):
    """Runs WriteEmbeddingTable on the given elements; returns the committed manifest.

    `tallies` default: every record counted as embedded.
    """
    cfg = SinkConfig(output=str(output), **{"max_error_fraction": 1.0, **sink})
    p = pipeline.new_pipeline(PipelineOptions([]))
    inputs = {
        "records": p | "Records" >> beam.Create(records),
        "failures": p | "Failures" >> beam.Create(failures),
        "tallies": p
        | "Tallies"
        >> beam.Create([("rows_in", rows_in)] + ([("rows_embedded", len(records))] if tallies is None else tallies)),
    }
    _ = inputs | sinks.WriteEmbeddingTable(cfg, run_id, _schema(sequence), {"table": METADATA, "config": {}})
    p.run().wait_until_finish()
    return sinks.read_table_manifest(str(output))


def test_pooled_and_sequence_batches_have_the_documented_arrow_types():
    pooled = sinks._table_batch(_schema(), _records(2))
    assert pooled.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert pooled.column("embedding").to_pylist() == [[0.0] * DIM, [1.0] * DIM]
    assert pooled.column("extra").to_pylist() == ["p0", "p1"]
    assert pooled.schema.names == ["id", "embedding", "content_hash", "extra"]
    assert pooled.column("content_hash").to_pylist() == [f"{0:064x}", f"{1:064x}"]
    rows = [
        Record("a", np.ones((2, DIM), np.float32), "s", ("x",)),
        Record("b", np.zeros((0, DIM), np.float32), "s", (None,)),
    ]
    sequence = sinks._table_batch(_schema(True), rows)
    assert sequence.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), DIM))
    assert sequence.column("embedding").to_pylist() == [[[1.0] * DIM] * 2, []]
    assert sequence.column("extra").to_pylist() == ["x", None]


def test_commit_writes_parts_errors_and_manifest(tmp_path):
    out = tmp_path / "out"
    manifest = write(out, _records(5), _failures(2), 7)
    assert manifest["counts"] == {
        "rows_in": 7,
        "rows_written": 5,
        "rows_embedded": 5,
        "rows_reused": 0,
        "rows_deduplicated": 0,
        "contents_embedded": 0,
        "rows_failed": 2,
        "balanced": True,
        "error_fraction": 2 / 7,
        "max_error_fraction": 1.0,
        "failed_by_stage": {"validate": 2},
    }
    assert manifest["run_id"] == "20260101T000000Z-aaaaaaaa" and manifest["format"] == commit.MANIFEST_FORMAT
    assert manifest["table"] == {**METADATA, "row_count": 5}
    assert manifest["files"] == [{"path": "part-00000-20260101T000000Z-aaaaaaaa.parquet", "rows": 5}]
    assert manifest["error_files"] == [{"path": "errors/part-00000-20260101T000000Z-aaaaaaaa.parquet", "rows": 2}]
    assert sorted(os.listdir(out)) == ["_SUCCESS", "errors", "part-00000-20260101T000000Z-aaaaaaaa.parquet"]

    table = sinks.read_table(str(out))
    assert sorted(table.column("id").to_pylist()) == [f"r{i}" for i in range(5)]
    part = pq.ParquetFile(out / manifest["files"][0]["path"])
    assert json.loads(part.schema_arrow.metadata[b"hub_embed"]) == METADATA
    assert part.metadata.num_rows == 5
    errors = sinks.read_errors(str(out))
    assert errors.schema == sinks.ERROR_SCHEMA and sorted(errors.column("id").to_pylist()) == ["bad0", "bad1"]
    # Vectors are stored plainly (a dictionary of floats that hardly repeat only costs time); the strings keep theirs.
    encodings = {
        part.metadata.schema.column(i).path: part.metadata.row_group(0).column(i).encodings
        for i in range(part.metadata.num_columns)
    }
    assert not any("DICTIONARY" in e for e in encodings["embedding.list.element"])
    assert all(any("DICTIONARY" in e for e in encodings[name]) for name in ("id", "content_hash", "extra"))


def test_rows_stream_into_the_open_part_one_row_group_per_batch(tmp_path, monkeypatch):
    """A worker holds one batch of rows, not a whole part: each batch is a row group of the open part."""
    monkeypatch.setattr(sinks, "ROWS_PER_BATCH", 2)
    manifest = write(tmp_path / "out", _records(5), [], 5)
    assert [f["rows"] for f in manifest["files"]] == [5]
    part = pq.ParquetFile(tmp_path / "out" / manifest["files"][0]["path"])
    assert [part.metadata.row_group(i).num_rows for i in range(part.num_row_groups)] == [2, 2, 1]
    rows = part.read().to_pydict()
    assert sorted(zip(rows["id"], rows["embedding"])) == [(f"r{i}", [float(i)] * DIM) for i in range(5)]


# In a process of its own, writes past 64 KiB fail (RLIMIT_FSIZE, as on a full disk).
WRITE_PAST_THE_LIMIT = """
import os, resource, signal, sys
from tests import test_sinks
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
out = sys.argv[1]

def open_under_output():
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            pass
    return [link for link in links if link.startswith(out)]

try:
    test_sinks.write(out, test_sinks._records(20000), [], 20000)
except Exception as e:  # while the failure is being handled, as a caller would (retry, clean up, remount)
    print("failed:", "File too large" in str(e))
    print("open under output:", open_under_output())
"""


def test_a_part_that_cannot_be_written_is_closed_not_left_open(tmp_path):
    out = str(tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-c", WRITE_PAST_THE_LIMIT, out], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["failed: True", "open under output: []"], done.stdout
    assert sinks.read_table_manifest(out) is None


def test_parts_are_cut_by_size_and_numbered_at_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "ROWS_PER_BATCH", 2)
    monkeypatch.setattr(sinks, "PART_BYTES", 1)
    manifest = write(tmp_path / "out", _records(5), [], 5)
    assert sorted(f["rows"] for f in manifest["files"]) == [1, 2, 2]
    assert [f["path"] for f in manifest["files"]] == [
        f"part-0000{i}-20260101T000000Z-aaaaaaaa.parquet" for i in range(3)
    ]
    assert sinks.read_table(str(tmp_path / "out")).num_rows == 5


def test_empty_input_commits_an_empty_table_with_its_schema(tmp_path):
    manifest = write(tmp_path / "out", [], [], 0, sequence=True)
    assert manifest["counts"]["rows_in"] == 0 and manifest["files"][0]["rows"] == 0
    table = sinks.read_table(str(tmp_path / "out"))
    assert table.num_rows == 0 and table.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), DIM))


def test_counts_that_do_not_add_up_commit_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Exception, match=r"Row counts do not add up: rows_in=9 but rows_written=5 \+ rows_failed=2"):
        write(out, _records(5), _failures(2), 9)
    assert sinks.read_table_manifest(str(out)) is None
    assert [e for e in os.listdir(out) if not e.startswith(".tmp-")] == []


def test_written_rows_that_are_neither_embedded_nor_reused_commit_nothing(tmp_path):
    out = tmp_path / "out"
    tallies = [("rows_embedded", 2), ("rows_reused", 1), ("rows_embedded", 1)]
    with pytest.raises(Exception, match=r"rows_written=5 but rows_embedded=3 \+ rows_reused=1 = 4"):
        write(out, _records(5), [], 5, tallies=tallies)
    assert sinks.read_table_manifest(str(out)) is None
    manifest = write(out, _records(5), [], 5, tallies=tallies + [("rows_reused", 1), ("rows_deduplicated", 2)])
    assert {k: manifest["counts"][k] for k in commit.TALLY_NAMES} == {
        "rows_embedded": 3,
        "rows_reused": 2,
        "rows_deduplicated": 2,
        "contents_embedded": 0,
    }


def test_error_budget_exceeded_commits_nothing_and_keeps_the_dead_letters(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Exception, match=r"2 of 7 records failed \(28.57%\), more than max_error_fraction=0.1") as info:
        write(out, _records(5), _failures(2), 7, max_error_fraction=0.1)
    message = str(info.value)
    assert (
        "Failures by stage: {'validate': 2}" in message and "f:100 (validate): empty or whitespace-only text" in message
    )
    assert sinks.read_table_manifest(str(out)) is None
    (tmp,) = os.listdir(out)
    assert tmp.startswith(".tmp-") and len(os.listdir(out / tmp / "errors")) == 1


def test_overwrite_replaces_the_table_and_clears_debris_only_after_commit(tmp_path):
    out = tmp_path / "out"
    old = write(out, _records(3, "old"), [], 3, run_id="20260101T000000Z-00000000")
    # What killed runs leave: a temp dir with parts, an empty temp dir, and parts moved without a manifest.
    (out / ".tmp-20260102T000000Z-dead").mkdir()
    (out / ".tmp-20260102T000000Z-dead" / "part-1.parquet").write_bytes(b"partial")
    (out / ".tmp-20260103T000000Z-empty").mkdir()
    shutil.copy(out / old["files"][0]["path"], out / "part-00000-20260102T000000Z-dead.parquet")
    assert sinks.read_table(str(out)).num_rows == 3  # readers see exactly the committed table

    new = write(out, _records(2, "new"), _failures(1), 3, run_id="20260104T000000Z-11111111", overwrite=True)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "errors", "part-00000-20260104T000000Z-11111111.parquet"]
    assert os.listdir(out / "errors") == ["part-00000-20260104T000000Z-11111111.parquet"]
    assert sorted(sinks.read_table(str(out)).column("id").to_pylist()) == ["new0", "new1"]
    assert new["counts"]["rows_in"] == 3


def test_a_retried_commit_finishes_what_the_first_attempt_started(tmp_path):
    out = tmp_path / "out"
    run_id = "20260101T000000Z-22222222"
    tmp = out / f".tmp-{run_id}"
    tmp.mkdir(parents=True)
    batch = sinks._table_batch(_schema(), _records(2))
    for name in ("part-a.parquet", "part-b.parquet"):
        pq.write_table(pa.Table.from_batches([batch]), tmp / name)
    # The first attempt moved one part, then died.
    os.rename(tmp / "part-a.parquet", out / f"part-00000-{run_id}.parquet")
    committer = commit.Commit(
        SinkConfig(output=str(out), max_error_fraction=0.0), run_id, _schema(), {"table": {}, "config": {}}, None
    )
    parts = [commit.PartFile("part-a.parquet", 2), commit.PartFile("part-b.parquet", 2)]
    (manifest,) = committer.process(None, parts, [], {}, [], {"rows_in": 4, "rows_embedded": 4})
    assert [f["path"] for f in manifest["files"]] == [f"part-0000{i}-{run_id}.parquet" for i in range(2)]
    assert sinks.read_table(str(out)).num_rows == 4 and not any(e.startswith(".tmp-") for e in os.listdir(out))
    (again,) = committer.process(
        None, parts, [], {}, [], {"rows_in": 4, "rows_embedded": 4}
    )  # a retry after the commit: nothing left to do
    assert again == manifest
