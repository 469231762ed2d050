"""Sources: every input format read by a real Beam pipeline, bad records dead-lettered, ids deduplicated."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.embedding import config, pipeline
from pipelines.embedding.records import METRICS_NAMESPACE, Failure, Record
from pipelines.embedding.sources import DedupeIds, ReadRecords, passthrough_value

_OUT: dict[str, list] = {}


def _collect(element, kind: str) -> None:
    _OUT[kind].append(element)  # The in-process runner shares this module's globals.


def read(dedupe: bool = False, **values) -> tuple[dict[str, Record], list[Failure], int]:
    """Runs ReadRecords (and DedupeIds) in-process; returns records by id, failures, and the rows_in counter."""
    cfg = config.from_dict({"output": "unused", **values})
    _OUT.clear()
    _OUT.update(records=[], failures=[])
    p = pipeline.new_pipeline(PipelineOptions([]))
    out = p | ReadRecords(cfg.source)
    records, failures = out.records, [out.failures]
    if dedupe:
        unique = records | DedupeIds()
        records = unique.records
        failures.append(unique.failures)
    _ = records | "CollectRecords" >> beam.Map(_collect, "records")
    _ = failures | beam.Flatten() | "CollectFailures" >> beam.Map(_collect, "failures")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name("rows_in"))[
        "counters"
    ]
    records_by_id = {r.id: r for r in _OUT["records"]}
    assert len(records_by_id) == len(_OUT["records"]) or dedupe is False
    return records_by_id, sorted(_OUT["failures"]), sum(c.committed for c in counters)


def test_txt_lines_ids_and_bad_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"first line\r\nsecond \xff\xfe line\n\ncaf\xc3\xa9 \x00 nul\nno newline at end")
    records, failures, rows_in = read(input=str(path))
    assert {k: r.payload for k, r in records.items()} == {
        f"{path}:1": "first line",
        f"{path}:3": "",  # blank lines are records (they fail validation later, like empty fields)
        f"{path}:4": "café \x00 nul",
        f"{path}:5": "no newline at end",
    }
    assert [(f.id, f.stage) for f in failures] == [(f"{path}:2", "read")]
    assert "can't decode byte 0xff" in failures[0].error
    assert rows_in == 5


def test_gzipped_txt_is_read_by_extension(tmp_path):
    path = tmp_path / "a.txt.gz"
    path.write_bytes(gzip.compress(b"one\ntwo\n"))
    records, failures, _ = read(input=str(path))
    assert sorted(r.payload for r in records.values()) == ["one", "two"] and not failures


def test_jsonl_records_and_every_kind_of_bad_line(tmp_path):
    lines = [
        json.dumps({"text": "a cat", "id": 7, "meta": {"k": [1, 2]}, "n": 3.5}),
        "not json {",
        "[1, 2]",
        json.dumps({"id": 9}),
        json.dumps({"text": None, "id": 10}),
        json.dumps({"text": 42, "id": 11}),
        json.dumps({"text": "no id"}),
        "   ",
        json.dumps({"text": "caf\u00e9", "id": "s-1", "meta": "plain"}),
    ]
    path = tmp_path / "a.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + b'{"text": "\xff bad", "id": 12}\n')
    records, failures, rows_in = read(input=str(path), id_field="id", passthrough=["meta", "n"])
    assert records["7"] == Record("7", "a cat", f"{path}:1", ('{"k": [1, 2]}', "3.5"))
    assert records["s-1"] == Record("s-1", "café", f"{path}:9", ("plain", None))
    assert len(records) == 2
    reasons = {f.source.rsplit(":", 1)[1]: (f.id, f.error) for f in failures}
    assert reasons["2"][1].startswith("not a JSON line")
    assert reasons["3"][1] == "JSON line is list, not an object"
    assert reasons["4"] == ("9", "text field 'text' is missing")
    assert reasons["5"] == ("10", "text field 'text' is null, not a string")
    assert reasons["6"] == ("11", "text field 'text' is int, not a string")
    assert reasons["7"] == (f"{path}:7", "id field 'id' is missing")
    assert reasons["10"][1].startswith("not a JSON line") and "decode" in reasons["10"][1]
    assert "8" not in reasons  # a blank line holds no record
    assert all(f.stage == "read" for f in failures)
    assert rows_in == len(records) + len(failures) == 9


def test_csv_quoting_ragged_rows_and_missing_columns(tmp_path):
    good = tmp_path / "a.csv"
    good.write_bytes(
        b'id,text,lang\n1,"a, quoted\nmulti-line text",en\n2,short,de\n3,too,many,fields\n4,"caf\xff",fr\n'
    )
    (tmp_path / "b.csv").write_text("id,body\n1,x\n")
    records, failures, rows_in = read(input=str(tmp_path / "*.csv"), id_field="id", passthrough=["lang"])
    assert records["1"].payload == "a, quoted\nmulti-line text" and records["1"].passthrough == ("en",)
    assert records["2"].source == f"{good}:2"
    assert {f.source: f.error for f in failures} == {
        f"{good}:3": "row has 4 fields, the header has 3",
        f"{good}:4": "invalid UTF-8 in the row",
        str(tmp_path / "b.csv"): "no column 'text'; columns: ['id', 'body']",
    }
    assert rows_in == 5


def test_parquet_columns_types_and_missing_column(tmp_path):
    table = pa.table(
        {
            "text": pa.array(["one", None, "three"]),
            "doc": pa.array([10, 11, 12], pa.int64()),
            "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
            "unused": pa.array([1.0, 2.0, 3.0]),
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really parquet")
    records, failures, rows_in = read(input=str(tmp_path / "*.parquet"), id_field="doc", passthrough=["tags"])
    assert records["10"].payload == "one" and records["10"].passthrough == ('["a"]',)
    assert records["12"].passthrough == (None,)
    by_source = {f.source: f for f in failures}
    assert by_source[f"{tmp_path / 'a.parquet'}:2"].error == "text field 'text' is null, not a string"
    assert "no column 'text'" in by_source[str(tmp_path / "b.parquet")].error
    assert by_source[str(tmp_path / "c.parquet")].error.startswith("file unreadable after 0 records")
    assert rows_in == 2 + 3


def test_tfrecord_examples_and_corrupt_tail(tmp_path):
    import tensorflow as tf

    def example(**features):
        feature = {}
        for name, value in features.items():
            if isinstance(value, bytes):
                feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
            else:
                feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    path = str(tmp_path / "a.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(example(text="caf\u00e9".encode(), key=5))
        writer.write(example(text=b"\xff\xfe", key=6))
        writer.write(example(text=7, key=7))
        writer.write(b"not an example")
    with open(path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a truncated record header
    records, failures, rows_in = read(input=path, id_field="key")
    assert records == {"5": Record("5", "café", f"{path}:1", ())}
    errors = {f.source: f.error for f in failures}
    assert errors[f"{path}:2"].startswith("text field 'text': 'utf-8' codec can't decode")
    assert errors[f"{path}:3"] == "text field 'text' is int, not a string"
    assert errors[f"{path}:4"].startswith("not a tf.train.Example")
    assert errors[f"{path}:5"].startswith("corrupt from record 5 on")
    assert rows_in == 5


def test_image_paths_skip_directories(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    records, failures, rows_in = read(input=str(tmp_path / "*"), input_format="image")
    assert sorted(records) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert all(r.payload == r.id == r.source for r in records.values())
    assert not failures and rows_in == 2


def test_duplicate_ids_keep_the_first_by_file_then_position(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"id": "x", "text": "from b"}\n')
    (tmp_path / "a.jsonl").write_text(
        '{"id": "y", "text": "y1"}\n' * 1 + "\n".join(f'{{"id": "x", "text": "a{i}"}}' for i in range(11)) + "\n"
    )
    records, failures, rows_in = read(dedupe=True, input=str(tmp_path / "*.jsonl"), id_field="id")
    assert records["x"].payload == "a0" and records["x"].source == f"{tmp_path / 'a.jsonl'}:2"
    assert len(failures) == 11 and {f.stage for f in failures} == {"dedupe"}
    assert all(f"the record at {tmp_path / 'a.jsonl'}:2 is kept" in f.error for f in failures)
    assert rows_in == 13


@pytest.mark.parametrize(
    "value, stored",
    [
        (None, None),
        ("s", "s"),
        (b"b\xff", "b\\xff"),
        (True, "true"),
        (3, "3"),
        ([1, "é"], '[1, "é"]'),
        ({"a": 1}, '{"a": 1}'),
    ],
)
def test_passthrough_values_are_strings(value, stored):
    assert passthrough_value(value) == stored
