"""Publishing tables into PostgreSQL + pgvector: exact, incremental, never a mix to readers, replaced, indexed.

A real PostgreSQL 18 with pgvector 0.8 (`tests/fixtures/postgres.py`), real tables written by the real
embedding pipeline with the tiny modules (`tests/fixtures/publish_cases.py`), and the real command line
(`pipelines.publish.__main__.main`, in-process); the Python entry points, and the publish benchmark at a
small size. A merge built beside the collection is tested in `test_rebuild.py`, what a publish
refuses in `test_refusals.py`, a killed publish in `test_kills.py`.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from pipelines.embedding import sinks
from pipelines.embedding.pipeline import new_pipeline
from pipelines.publish import catalogue, snapshot
from pipelines.publish.errors import PublishError
from pipelines.publish.layout import Layout
from pipelines.publish.options import PublishConfig, PublishOptions
from pipelines.publish.publishing import build_publish_pipeline, publish_table
from tests.fixtures.postgres import PASSWORD
from tests.fixtures.publish_cases import changes, expected, publish, role

# --------------------------------------------------------------------------- exact and incremental


def test_a_table_is_published_exactly_and_the_catalogue_says_what_it_holds(db, tables, tiny, capsys):
    result = publish(tables.v1, db.uri, capsys=capsys)
    assert result.rc == 0, result.err
    assert db.rows() == expected(tables.v1)
    entry = db.entry()
    metadata = sinks.read_table_manifest(tables.v1)["table"]
    assert {k: entry[k] for k in ("module", "fingerprint", "signature", "output_key", "dimension")} == {
        k: metadata[k] for k in ("module", "fingerprint", "signature", "output_key", "dimension")
    }
    assert (entry["metric"], entry["vector_type"], entry["columns"], entry["row_count"]) == (
        "cosine",
        "vector",
        ["lang"],
        60,
    )
    assert entry["index"]["method"] == "hnsw" and entry["index"]["build_params"] == {"m": 16, "ef_construction": 64}
    assert entry["source_run_id"] == metadata["run_id"] and entry["source_table"] == tables.v1
    assert changes(db) == {"mode": "build", "inserted": 60, "updated": 0, "deleted": 0, "unchanged": 0, "staged": 60}
    assert set(entry["last_changes"]["seconds"]) == {"stage", "key", "commit"}
    assert (
        "USING hnsw (embedding vector_cosine_ops)"
        in db.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'docs_embedding_idx'")[0][0]
    )
    assert "build: 60 inserted" in result.out and PASSWORD not in result.out + result.err
    assert db.work_left() == []


def test_the_same_table_twice_changes_nothing(db, tables):
    assert publish(tables.v1, db.uri).rc == 0
    before = db.xmins()
    assert publish(tables.v1, db.uri).rc == 0
    assert changes(db) == {"mode": "merge", "inserted": 0, "updated": 0, "deleted": 0, "unchanged": 60, "staged": 0}
    assert db.xmins() == before  # not one row rewritten
    assert db.rows() == expected(tables.v1) and db.work_left() == []


def test_a_new_table_inserts_updates_and_deletes_only_what_changed(db, tables):
    assert publish(tables.v1, db.uri).rc == 0
    before = db.xmins()
    assert publish(tables.v2, db.uri).rc == 0
    # Only the 3 rows that differ were staged (COPYed) by the workers, not the table's 60.
    assert changes(db) == {"mode": "merge", "inserted": 1, "updated": 2, "deleted": 1, "unchanged": 57, "staged": 3}
    seconds = db.entry()["last_changes"]["seconds"]
    assert set(seconds) == {"snapshot", "stage", "delete", "update", "insert", "commit"}
    assert all(s >= 0 for s in seconds.values())
    rows, v1, v2 = db.rows(), expected(tables.v1), expected(tables.v2)
    assert set(rows) == set(v2)
    for row_id, (content_hash, vector, lang, run_id) in rows.items():
        if row_id in ("t1", "t2", "t60"):
            assert (content_hash, vector, lang, run_id) == v2[row_id]
        else:  # unchanged rows keep the run that wrote them, untouched
            assert (content_hash, vector, lang, run_id) == v1[row_id] and db.xmins()[row_id] == before[row_id]
    assert rows["t1"][0] != v1["t1"][0] and rows["t2"][2] == "fr"


def test_workers_digest_rows_as_the_server_does_non_ascii_and_null_values_included(db):
    layout = Layout("public", "digests", "vector", 2, ("lang", "note"))
    db.query("CREATE TABLE digests (id text, content_hash text, embedding vector(2), lang text, note text)")
    rows = [("t1", "h1", "en", None), ("é☃-2", "h2", None, ""), ("x" * 300, "h3", "ü", "a\x01b")]
    for row in rows:
        db.query("INSERT INTO digests VALUES (%s, %s, '[1,2]', %s, %s)", row)
    columns = [pa.array([row[i] for row in rows], pa.string()) for i in range(4)]
    with psycopg.connect(db.server.uri(db.name)) as conn:
        server = snapshot.read(conn, layout)
    workers = snapshot.Snapshot.of(snapshot.id_digests(columns[0]), snapshot.content_digests(columns[1], columns[2:]))
    assert server.ids.tobytes() == workers.ids.tobytes() and server.contents.tobytes() == workers.contents.tobytes()
    assert server.unchanged(workers.ids, workers.contents).all()


def test_keep_missing_keeps_rows_the_table_no_longer_has(db, tables):
    assert publish(tables.v1, db.uri).rc == 0
    assert publish(tables.v2, db.uri, "--keep-missing").rc == 0
    assert changes(db) == {"mode": "merge", "inserted": 1, "updated": 2, "deleted": 0, "unchanged": 57, "staged": 3}
    assert set(db.rows()) == set(expected(tables.v2)) | {"t0"}


@pytest.mark.parametrize("flags", [(), ("--rebuild-above", "0")], ids=["in-place", "beside"])
def test_readers_see_the_old_collection_or_the_new_one_never_a_mix(db, tables, flags):
    assert publish(tables.v1, db.uri).rc == 0
    new_run = sinks.read_table_manifest(tables.v2)["run_id"]
    seen, errors, done = set(), [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(
                    tuple(
                        db.query("SELECT count(*), count(*) FILTER (WHERE source_run_id = %s) FROM docs", [new_run])[0]
                    )
                )
            except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert publish(tables.v2, db.uri, *flags).rc == 0
        time.sleep(0.2)
    finally:
        done.set()
        reader.join()
    assert not errors and seen <= {(60, 0), (60, 3)} and (60, 3) in seen
    assert changes(db).get("rebuilt", False) == bool(flags)


# --------------------------------------------------------------------------- replace: another vector space, swapped in


def test_replace_builds_beside_and_swaps_atomically(db, tables):
    assert publish(tables.v1, db.uri).rc == 0
    app_role = role(db, "docs_reader")
    db.query(f"GRANT SELECT ON docs TO {app_role}")
    old_run, new_run = (sinks.read_table_manifest(t)["run_id"] for t in (tables.v1, tables.other))
    seen, errors, done = set(), [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.add(tuple(db.query("SELECT count(*), min(source_run_id), max(source_run_id) FROM docs")[0]))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert publish(tables.other, db.uri, "--replace", "--index", "ivfflat").rc == 0
        time.sleep(0.2)
    finally:
        done.set()
        reader.join()
    assert not errors and seen <= {(60, old_run, old_run), (60, new_run, new_run)}
    assert db.rows() == expected(tables.other)
    assert db.entry()["fingerprint"] == sinks.read_table_manifest(tables.other)["table"]["fingerprint"]
    assert sorted(n for n in db.relations() if n.startswith("docs")) == ["docs", "docs_embedding_idx", "docs_pkey"]
    assert "ivfflat" in db.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'docs_embedding_idx'")[0][0]
    assert db.query("SELECT has_table_privilege(%s, 'docs', 'SELECT')", [app_role]) == [(True,)]  # carried over
    assert db.work_left() == []


# --------------------------------------------------------------------------- index and vector type


def test_index_choices_and_halfvec_are_built_and_recorded(db, tables):
    assert (
        publish(tables.v1, db.uri, "--halfvec", "--index", "ivfflat", "--metric", "l2", "--ivfflat-lists", "3").rc == 0
    )
    assert db.query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"
    ) == [("halfvec(8)",)]
    indexdef = db.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'docs_embedding_idx'")[0][0]
    assert "ivfflat (embedding halfvec_l2_ops)" in indexdef and "lists='3'" in indexdef
    index = db.entry()["index"]
    assert (index["method"], index["build_params"], index["search_settings"]) == (
        "ivfflat",
        {"lists": 3},
        {"ivfflat.probes": 2},
    )
    stored = {r[0]: r[1].to_numpy() for r in db.query("SELECT id, embedding FROM docs")}
    table = {r["id"]: np.asarray(r["embedding"], np.float32) for r in sinks.read_table(tables.v1).to_pylist()}
    assert all(np.array_equal(stored[i], table[i].astype(np.float16)) for i in table)
    before = db.xmins()
    assert publish(tables.v1, db.uri, "--halfvec", "--index", "none").rc == 0  # the index changes, the rows do not
    assert db.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'docs_embedding_idx'") == [(0,)]
    assert db.entry()["index"] == {"method": "none"} and db.xmins() == before


# --------------------------------------------------------------------------- the API


def test_publish_table_and_build_publish_pipeline_are_the_entry_points(db, tables):
    from apache_beam.options.pipeline_options import PipelineOptions

    result = publish_table(tables.v1, db.uri, "docs", PublishOptions(index="none"))
    assert (result.mode, result.inserted, result.rows, result.index) == ("build", 60, 60, None)
    cfg = PublishConfig.create(
        tables.v2, db.uri, "docs", PublishOptions.from_dict({"index": "none", "keep_missing": True})
    )
    p = new_pipeline(PipelineOptions())
    build_publish_pipeline(p, cfg)
    p.run().wait_until_finish()
    assert changes(db) == {"mode": "merge", "inserted": 1, "updated": 2, "deleted": 0, "unchanged": 57, "staged": 3}
    with pytest.raises(PublishError, match="unknown publish option"):
        PublishOptions.from_dict({"indexes": "hnsw"})
    with pytest.raises(PublishError, match="keep-missing"):
        PublishOptions(replace=True, keep_missing=True)
    assert catalogue.CATALOGUE in db.relations()


# --------------------------------------------------------------------------- the benchmark, at a small size


@pytest.mark.slow
def test_the_publish_benchmark_runs_at_a_small_size(tiny, postgres, tmp_path):
    from benchmarks import publish as benchmark

    report_path = tmp_path / "publish.json"
    argv = ["--rows", "300", "--queries", "5", "--baseline-rows", "100", "--module", tiny.text]
    argv += ["--to", postgres.uri(postgres.database()), "--workdir", str(tmp_path / "work"), "--json", str(report_path)]
    assert benchmark.main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["benchmark"] == "publish" and report["meta"]["command"].startswith("python -m benchmarks.publish")
    incremental = report["publishes"]["incremental"]
    assert (incremental["mode"], incremental["deleted"], incremental["updated"], incremental["inserted"]) == (
        "merge",
        3,
        3,
        3,
    )
    assert incremental["staged"] == 6 and report["metrics"]["incremental_rows_staged"] == 6
    beside = report["publishes"]["beside"]  # the same change backwards, merged beside the collection
    assert (beside["rebuilt"], beside["deleted"], beside["updated"], beside["inserted"]) == (True, 3, 3, 3)
    assert not incremental["rebuilt"] and report["metrics"]["rebuild_break_even_share"] >= 0
    assert report["publishes"]["full"]["rows"] == 300 and report["baselines"]["executemany"]["rows"] == 100
    assert "skipped" in report["baselines"]["langchain"] and report["metrics"]["load_speedup_vs_langchain"] is None
    assert 0 < report["metrics"]["recall_at_10"] <= 1 and set(report["targets"]) == {k for k, _, _ in benchmark.TARGETS}
