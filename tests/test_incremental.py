"""Incremental embedding: content keys, `--reuse`, one module call per content, and the reuse table's failure modes.

Real Beam pipelines (DirectRunner) on real tables written by earlier runs, with
the tiny real modules of `tests/fixtures/tiny_modules.py`; remote reuse tables
live on the local S3 and GCS test servers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipelines.embedding import config, pipeline, sinks
from tests.fixtures import tiny_modules as tm
from tests.fixtures.reliability import run

TEXTS = [f"sentence {i} about {'apples and pears' if i % 3 else 'cars and trucks'} number {i * 7}" for i in range(12)]


def write_jsonl(path, rows) -> str:
    """Rows of (id, text, lang) as JSONL with `id`, `text` and a passthrough field `lang`."""
    with open(path, "w") as f:
        for record_id, text, lang in rows:
            f.write(json.dumps({"id": record_id, "text": text, "lang": lang}) + "\n")
    return str(path)


def jsonl_args(src, module) -> list[str]:
    return ["--input", src, "--id-field", "id", "--passthrough", "lang", "--module", module]


def by_id(output) -> dict[str, dict]:
    rows = sinks.read_table(str(output)).to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "duplicate ids"
    return {r["id"]: r for r in rows}


def vector_bytes(row: dict) -> bytes:
    return np.asarray(row["embedding"], np.float32).tobytes()


@pytest.fixture
def first(tiny, tmp_path):
    """A committed table of TEXTS (ids t0..t11), and its input."""
    src = write_jsonl(tmp_path / "v1.jsonl", [(f"t{i}", t, "en") for i, t in enumerate(TEXTS)])
    out = tmp_path / "v1"
    result = run(out, *jsonl_args(src, tiny.text))
    assert result.rc == 0, result.err
    return out


def second_input(tmp_path) -> tuple[str, dict]:
    """The next night's corpus: t0 removed, t1 changed, t12 new, d1/d2 duplicates of t3's text; t2..t11 unchanged."""
    rows = [(f"t{i}", t, "en") for i, t in enumerate(TEXTS) if i != 0]
    rows[0] = ("t1", TEXTS[1] + " (edited)", "en")
    rows += [("t12", "a brand new sentence", "fr"), ("d1", TEXTS[3], "de"), ("d2", TEXTS[3], "es")]
    return write_jsonl(tmp_path / "v2.jsonl", rows), {
        "unchanged": [f"t{i}" for i in range(2, 12)],
        "new": ["t1", "t12"],
    }


# --------------------------------------------------------------------------- content keys


def test_every_row_has_the_sha256_of_its_text_and_the_metadata_names_it(first):
    rows = by_id(first)
    assert {r["content_hash"] for r in rows.values()} == {hashlib.sha256(t.encode()).hexdigest() for t in TEXTS}
    part = pq.ParquetFile(first / sinks.read_table_manifest(str(first))["files"][0]["path"])
    scheme = json.loads(part.schema_arrow.metadata[b"hub_embed"])["content_hash"]
    assert scheme["function"] == "sha256" and "UTF-8 bytes of the validated text" in scheme["covers"]


# --------------------------------------------------------------------------- --reuse


def test_reuse_takes_unchanged_vectors_bit_identical_and_embeds_only_what_changed(first, tiny, tmp_path):
    src, expect = second_input(tmp_path)
    out = tmp_path / "v2"
    result = run(out, *jsonl_args(src, tiny.text), "--reuse", str(first))
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=14)
    counts = result.counts
    # t2..t11 and d1, d2 (t3's text) are reused; t1 (changed) and t12 (new) are embedded.
    assert (counts["rows_reused"], counts["rows_embedded"], counts["contents_embedded"]) == (12, 2, 2)
    assert counts["rows_deduplicated"] == 2  # d1 and d2 share t3's content
    old, new = by_id(first), by_id(out)
    for record_id in expect["unchanged"]:
        assert vector_bytes(new[record_id]) == vector_bytes(old[record_id]), record_id
    assert vector_bytes(new["d1"]) == vector_bytes(new["d2"]) == vector_bytes(old["t3"])
    assert (new["d1"]["lang"], new["d2"]["lang"], new["t3"]["lang"]) == ("de", "es", "en")
    # Changed and new rows equal a fresh embedding of them.
    fresh = tm.text_module_reference([TEXTS[1] + " (edited)", "a brand new sentence"])
    for record_id, vector in zip(expect["new"], fresh):
        np.testing.assert_allclose(new[record_id]["embedding"], vector, atol=1e-6)
    reuse = result.manifest["reuse"]
    assert reuse["used"] and reuse["reason"] is None
    assert (reuse["table"], reuse["run_id"]) == (str(first), sinks.read_table_manifest(str(first))["run_id"])


def test_only_the_files_the_reuse_manifest_names_are_read(first, tiny, tmp_path):
    """A part no manifest names (a killed run's leftover) holds other vectors for the same contents: never read."""
    named = first / sinks.read_table_manifest(str(first))["files"][0]["path"]
    table = pq.read_table(named)
    stray = table.set_column(
        1, "embedding", pa.array([[9.0] * 8] * table.num_rows, table.schema.field("embedding").type)
    )
    pq.write_table(stray, first / "part-99999-killed.parquet")
    os.makedirs(first / ".tmp-20200101T000000Z-deadbeef")
    pq.write_table(stray, first / ".tmp-20200101T000000Z-deadbeef" / "part-x.parquet")
    src, expect = second_input(tmp_path)
    result = run(tmp_path / "v2", *jsonl_args(src, tiny.text), "--reuse", str(first))
    assert result.rc == 0 and result.counts["rows_reused"] == 12
    old, new = by_id(first), by_id(tmp_path / "v2")
    for record_id in expect["unchanged"]:
        assert vector_bytes(new[record_id]) == vector_bytes(old[record_id])


def test_the_summary_tells_reused_rows_and_the_workers_module_load(first, tiny, tmp_path, capsys):
    from pipelines import embed

    src = write_jsonl(tmp_path / "same.jsonl", [(f"t{i}", t, "en") for i, t in enumerate(TEXTS)])
    capsys.readouterr()
    assert run(tmp_path / "v2", *jsonl_args(src, tiny.text), "--reuse", str(first)).rc == 0
    out = capsys.readouterr().out
    assert "rows in 12, embedded 0, reused 12, failed 0" in out
    assert f"reused vectors from {first}" in out
    assert "loading the module" not in out  # every row reused: no worker loaded it
    cfg = config.load([*jsonl_args(src, tiny.text), "--output", str(first)])
    assert "2.5s of it loading the module" in embed._summary(cfg, sinks.read_table_manifest(str(first)), 10.0, 2.5)


def test_identical_contents_are_embedded_once_and_every_row_keeps_its_own_columns(tiny, tmp_path):
    rows = [(f"r{i}", TEXTS[i % 3], f"lang{i}") for i in range(10)]  # 3 contents, 10 rows
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = config.load([*jsonl_args(src, tiny.text), "--output", str(tmp_path / "out")])
    p = pipeline.new_pipeline(PipelineOptions([]))
    pipeline.build_pipeline(p, cfg)
    result = p.run()
    result.wait_until_finish()

    def counter(name: str) -> int:
        found = result.metrics().query(MetricsFilter().with_namespace("hub_embed").with_name(name))["counters"]
        return sum(c.committed for c in found)

    assert counter("num_inferences") == 3  # RunInference's own count of elements sent to the module
    assert (counter("contents_embedded"), counter("rows_embedded"), counter("rows_written")) == (3, 10, 10)
    assert counter("rows_reused") == 0
    counts = sinks.read_table_manifest(str(tmp_path / "out"))["counts"]
    assert (
        counts["rows_written"],
        counts["rows_embedded"],
        counts["rows_deduplicated"],
        counts["contents_embedded"],
    ) == (10, 10, 7, 3)
    table = by_id(tmp_path / "out")
    expected = tm.text_module_reference(TEXTS[:3])
    for i in range(10):
        row = table[f"r{i}"]
        assert row["lang"] == f"lang{i}"
        np.testing.assert_allclose(row["embedding"], expected[i % 3], atol=1e-6)


def test_reuse_counters_are_beam_metrics(first, tiny, tmp_path):
    src, _ = second_input(tmp_path)
    cfg = config.load([*jsonl_args(src, tiny.text), "--output", str(tmp_path / "v2"), "--reuse", str(first)])
    p = pipeline.new_pipeline(PipelineOptions([]))
    pipeline.build_pipeline(p, cfg)
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace("hub_embed"))["counters"]:  # summed over steps
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    assert {k: counters.get(k) for k in ("rows_reused", "rows_embedded", "contents_embedded", "rows_written")} == {
        "rows_reused": 12,
        "rows_embedded": 2,
        "contents_embedded": 2,
        "rows_written": 14,
    }


def test_reuse_may_name_the_output_itself_with_overwrite(first, tiny, tmp_path):
    old = by_id(first)
    old_files = set(os.listdir(first))
    src, expect = second_input(tmp_path)
    result = run(first, *jsonl_args(src, tiny.text), "--reuse", str(first), "--overwrite")
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=14)
    assert result.counts["rows_reused"] == 12
    new = by_id(first)
    for record_id in expect["unchanged"]:
        assert vector_bytes(new[record_id]) == vector_bytes(old[record_id])
    assert not old_files & set(os.listdir(first)) - {"_SUCCESS", "_report.html"}, "the old table's parts are left"


def test_per_token_vectors_are_reused_bit_identical(tiny, tmp_path):
    src = str(tmp_path / "in.txt")
    with open(src, "w") as f:
        f.write("\n".join(TEXTS[:5]) + "\n")
    args = ["--input", src, "--module", tiny.text, "--signature", "tokens", "--output-key", "elmo"]
    assert run(tmp_path / "a", *args).rc == 0
    result = run(tmp_path / "b", *args, "--reuse", str(tmp_path / "a"))
    assert result.rc == 0 and result.counts["rows_reused"] == 5
    old, new = by_id(tmp_path / "a"), by_id(tmp_path / "b")
    for key, row in old.items():
        assert len(row["embedding"]) == len(TEXTS[int(key.rsplit(":", 1)[1]) - 1].split())
        assert (
            np.asarray(new[key]["embedding"], np.float32).tobytes()
            == np.asarray(row["embedding"], np.float32).tobytes()
        )


def _image(path, color, size=(10, 6)) -> str:
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_images_are_keyed_by_their_bytes_and_size_and_only_changed_ones_are_decoded(tiny, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, color in (("a", (200, 10, 10)), ("b", (10, 200, 10)), ("c", (10, 10, 200))):
        _image(photos / f"{name}.png", color)
    args = ["--input", str(photos / "*.png"), "--module", tiny.image_open, "--image-size", "8,8"]
    assert run(tmp_path / "v1", *args).rc == 0
    _image(photos / "b.png", (90, 90, 90))  # changed
    shutil.copy(photos / "a.png", photos / "a-copy.png")  # same bytes, new name
    result = run(tmp_path / "v2", *args, "--reuse", str(tmp_path / "v1"))
    assert result.rc == 0, result.err
    counts = result.counts
    assert (counts["rows_reused"], counts["rows_embedded"], counts["rows_deduplicated"]) == (3, 1, 1)
    old, new = by_id(tmp_path / "v1"), by_id(tmp_path / "v2")
    a, copy = str(photos / "a.png"), str(photos / "a-copy.png")
    assert vector_bytes(new[a]) == vector_bytes(new[copy]) == vector_bytes(old[a])
    assert new[str(photos / "b.png")]["content_hash"] != old[str(photos / "b.png")]["content_hash"]
    # Another target size means other pixels: nothing is reused, and the manifest says why.
    other = run(tmp_path / "v3", *args[:-1], "6,6", "--reuse", str(tmp_path / "v1"))
    assert other.rc == 0 and other.counts["rows_reused"] == 0
    assert "content_hash" in other.manifest["reuse"]["reason"]


# --------------------------------------------------------------------------- reuse tables that do not suit


def test_a_table_of_another_module_or_output_is_reused_for_nothing_and_the_run_says_why(first, tiny, tmp_path, caplog):
    other = tm.build_text_module(str(tmp_path / "other-module"), seed=1)
    src, _ = second_input(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hub_embed"):
        result = run(tmp_path / "v2", *jsonl_args(src, other), "--reuse", str(first))
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=14)
    assert (result.counts["rows_reused"], result.counts["rows_embedded"]) == (0, 14)
    reuse = result.manifest["reuse"]
    assert not reuse["used"] and "fingerprint" in reuse["reason"]
    assert any("Reusing nothing from" in r.message and "fingerprint" in r.message for r in caplog.records)
    expected = tm.text_module_reference([TEXTS[5]], seed=1)[0]
    np.testing.assert_allclose(by_id(tmp_path / "v2")["t5"]["embedding"], expected, atol=1e-6)

    tokens = run(tmp_path / "v3", *jsonl_args(src, tiny.text), "--signature", "tokens", "--reuse", str(first))
    assert tokens.rc == 0 and tokens.counts["rows_reused"] == 0
    assert "signature" in tokens.manifest["reuse"]["reason"]


def test_a_table_written_before_content_hashes_is_reused_for_nothing_with_a_warning(first, tiny, tmp_path, caplog):
    manifest = sinks.read_table_manifest(str(first))
    for entry in manifest["files"]:  # what a table of the previous release looks like
        path = first / entry["path"]
        table = pq.read_table(path)
        metadata = json.loads(table.schema.metadata[b"hub_embed"])
        del metadata["content_hash"]
        table = table.drop_columns(["content_hash"]).replace_schema_metadata({"hub_embed": json.dumps(metadata)})
        pq.write_table(table, path)
    del manifest["table"]["content_hash"]
    (first / "_SUCCESS").write_text(json.dumps(manifest))
    src, _ = second_input(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hub_embed"):
        result = run(tmp_path / "v2", *jsonl_args(src, tiny.text), "--reuse", str(first))
    assert result.rc == 0, result.err
    assert (result.counts["rows_reused"], result.counts["rows_embedded"]) == (0, 14)
    assert "before tables had a content_hash column" in result.manifest["reuse"]["reason"]
    assert any("content_hash column" in r.message for r in caplog.records if r.levelno == logging.WARNING)


def _no_success(table):
    (table / "_SUCCESS").unlink()


def _truncated_part(table):
    part = table / sinks.read_table_manifest(str(table))["files"][0]["path"]
    part.write_bytes(part.read_bytes()[:100])


def _missing_part(table):
    (table / sinks.read_table_manifest(str(table))["files"][0]["path"]).unlink()


def _manifest_not_json(table):
    (table / "_SUCCESS").write_text("{ not json")


def _row_count_lies(table):
    manifest = sinks.read_table_manifest(str(table))
    manifest["files"][0]["rows"] += 1
    (table / "_SUCCESS").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, message",
    [
        (None, "does not exist"),
        (_no_success, "has no _SUCCESS: it is not a committed table"),
        (_manifest_not_json, "its _SUCCESS cannot be read"),
        (_truncated_part, "cannot be read"),
        (_missing_part, "cannot be read"),
        (_row_count_lies, "holds 12 rows, its manifest says 13"),
    ],
)
def test_a_reuse_table_that_is_missing_uncommitted_or_corrupt_fails_before_the_run(
    damage, message, first, tiny, tmp_path, capsys
):
    table = first if damage else tmp_path / "nothing-here"
    if damage:
        damage(first)
    src, _ = second_input(tmp_path)
    result = run(tmp_path / "v2", *jsonl_args(src, tiny.text), "--reuse", str(table), capsys=capsys)
    assert result.rc == 2
    assert f"reuse table {str(table)!r}" in result.err and message in result.err, result.err
    assert not os.path.exists(tmp_path / "v2"), "the run started"


# --------------------------------------------------------------------------- remote reuse tables


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_reuse_tables_on_s3_and_gcs(scheme, tiny, tmp_path, request):
    if scheme == "s3":
        request.getfixturevalue("s3_server").client().create_bucket(Bucket="tables")
    else:
        request.getfixturevalue("gcs_server").client().create_bucket("tables")
    base = f"{scheme}://tables/corpus"
    src1 = write_jsonl(tmp_path / "v1.jsonl", [(f"t{i}", t, "en") for i, t in enumerate(TEXTS)])
    first = run(f"{base}/v1", *jsonl_args(src1, tiny.text))
    assert first.rc == 0
    src2, expect = second_input(tmp_path)
    second = run(f"{base}/v2", *jsonl_args(src2, tiny.text), "--reuse", f"{base}/v1")
    assert second.rc == 0
    counts = sinks.read_table_manifest(f"{base}/v2")["counts"]
    assert (counts["rows_reused"], counts["rows_embedded"], counts["rows_written"]) == (12, 2, 14)
    old, new = by_id(f"{base}/v1"), by_id(f"{base}/v2")
    for record_id in expect["unchanged"]:
        assert vector_bytes(new[record_id]) == vector_bytes(old[record_id])
    assert run(f"{base}/v3", *jsonl_args(src2, tiny.text), "--reuse", f"{base}/missing").rc == 2
