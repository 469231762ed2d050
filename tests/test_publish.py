"""Publishing tables into PostgreSQL + pgvector: exact, incremental, one vector space per collection, killed and rerun.

A real PostgreSQL 18 with pgvector 0.8 (`tests/fixtures/postgres.py`), real tables written by the real
embedding pipeline with the tiny modules, and the real command line (`pipelines.publish.__main__.main`,
in-process, or in a subprocess where it is killed). Tests connect as a role that logs in with a password,
which no output may show.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from pipelines.embedding import sinks
from pipelines.embedding.pipeline import new_pipeline
from pipelines.publish import catalogue, snapshot, source
from pipelines.publish.__main__ import main as publish_main
from pipelines.publish.__main__ import parser as publish_parser
from pipelines.publish.errors import PublishError, PublishFailed
from pipelines.publish.index import index_spec
from pipelines.publish.layout import Layout
from pipelines.publish.options import PublishConfig, PublishOptions
from pipelines.publish.plan import prepare
from pipelines.publish.publishing import build_publish_pipeline, publish_table, run
from tests.fixtures import tiny_modules as tm
from tests.fixtures.postgres import PASSWORD, PUBLISHER, Db, embed_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [f"sentence {i} about {'apples and pears' if i % 3 else 'cars and trucks'} number {i * 7}" for i in range(61)]
V1 = [(f"t{i}", TEXTS[i], "en") for i in range(60)]
# t0 removed, t1's text and t2's lang changed, t60 new; t3..t59 unchanged.
V2 = [("t1", TEXTS[1] + " (edited)", "en"), ("t2", TEXTS[2], "fr"), *V1[3:], ("t60", TEXTS[60], "de")]


@pytest.fixture(scope="session")
def tables(tiny, tmp_path_factory):
    """v1 and v2 of a corpus (row groups of 16 rows), the same corpus by another module, another columns, per token."""
    root = tmp_path_factory.mktemp("tables")
    other_module = tm.build_text_module(str(root / "other-module"), seed=5)
    return types.SimpleNamespace(
        v1=embed_table(root / "v1", tiny.text, V1, rows_per_group=16),
        v2=embed_table(root / "v2", tiny.text, V2, rows_per_group=16),
        other=embed_table(root / "other", other_module, V1),
        no_columns=embed_table(root / "no-columns", tiny.text, V1, extra=()),
        per_token=embed_table(
            root / "per-token", tiny.text, V1, extra=("--signature", "tokens", "--output-key", "elmo")
        ),
    )


def expected(table: str) -> dict[str, tuple]:
    """The table's rows as the collection should hold them: content hash, float32 bytes, lang, run id."""
    run_id = sinks.read_table_manifest(table)["run_id"]
    return {
        r["id"]: (r["content_hash"], np.asarray(r["embedding"], np.float32).tobytes(), r["lang"], run_id)
        for r in sinks.read_table(table).to_pylist()
    }


def publish(table: str, uri: str, *flags: str, capsys=None) -> types.SimpleNamespace:
    rc = publish_main([table, "--to", uri, "--collection", "docs", *flags])
    out = capsys.readouterr() if capsys else types.SimpleNamespace(out="", err="")
    return types.SimpleNamespace(rc=rc, out=out.out, err=out.err)


def changes(db: Db, collection: str = "docs") -> dict:
    return {k: v for k, v in db.entry(collection)["last_changes"].items() if k not in ("index_build_s", "seconds")}


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


# --------------------------------------------------------------------------- a merge that writes many rows


def _role(db: Db, name: str) -> str:
    """A role of the cluster (roles outlive a test's database), created once."""
    if not db.query("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]):
        db.query(f"CREATE ROLE {name}")
    return name


def test_a_merge_over_the_share_builds_beside_with_the_result_of_one_in_place(db, tables, capsys):
    reader = _role(db, "docs_reader")
    for collection in ("docs", "beside"):
        assert publish_main([tables.v1, "--to", db.uri, "--collection", collection]) == 0
    db.query(f"GRANT SELECT ON beside TO {reader}")
    capsys.readouterr()
    assert publish_main([tables.v2, "--to", db.uri, "--collection", "docs", "--rebuild-above", "never"]) == 0
    # 3 staged rows of 60: over a share of 0.04, the merge builds beside.
    assert publish_main([tables.v2, "--to", db.uri, "--collection", "beside", "--rebuild-above", "0.04"]) == 0
    out = capsys.readouterr().out
    assert out.count("merge (rebuilt beside the old collection): 1 inserted, 2 updated, 1 deleted") == 1
    assert changes(db, "beside") == {**changes(db, "docs"), "rebuilt": True}
    assert changes(db, "docs") == {
        "mode": "merge",
        "inserted": 1,
        "updated": 2,
        "deleted": 1,
        "unchanged": 57,
        "staged": 3,
    }
    assert set(db.entry("beside")["last_changes"]["seconds"]) == {
        "snapshot",
        "stage",
        "copy",
        "delete",
        "key",
        "commit",
    }
    assert db.rows("beside") == db.rows("docs")  # unchanged rows keep the run that wrote them
    assert sorted(n for n in db.relations() if n.startswith("beside")) == [
        "beside",
        "beside_embedding_idx",
        "beside_pkey",
    ]
    indexdef = db.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'beside_embedding_idx'")[0][0]
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')" in indexdef
    assert db.query("SELECT has_table_privilege(%s, 'beside', 'SELECT')", [reader]) == [(True,)]
    assert db.entry("beside")["row_count"] == 60 and db.work_left() == []
    # The same table again stages nothing: in place, nothing rewritten.
    before = db.xmins("beside")
    assert publish_main([tables.v2, "--to", db.uri, "--collection", "beside", "--rebuild-above", "0"]) == 0
    assert "rebuilt" not in changes(db, "beside") and db.xmins("beside") == before


# What a swap would lose: each keeps a merge in place. (SQL run as the superuser; then a check it is still there.)
EXTRAS = {
    "a view or rule depends on it": (
        ("CREATE VIEW docs_langs AS SELECT id, lang FROM docs",),
        "SELECT count(*) FROM docs_langs WHERE lang = 'fr'",
    ),
    "it has a trigger": (
        (
            "CREATE FUNCTION docs_touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
            "CREATE TRIGGER docs_touch BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION docs_touch()",
        ),
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'docs_touch'",
    ),
    "it has row security or a policy": (
        ("CREATE POLICY docs_all ON docs USING (true)",),
        "SELECT count(*) FROM pg_policy WHERE polname = 'docs_all'",
    ),
    "it is in a publication": (
        ("CREATE PUBLICATION docs_changes FOR TABLE docs",),
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'docs_changes'",
    ),
    "it has an index of its own": (
        ("CREATE INDEX docs_lang ON docs (lang)",),
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'docs_lang'",
    ),
    "it has column grants": (
        ("GRANT SELECT (id, lang) ON docs TO docs_reader",),
        "SELECT count(*) FROM information_schema.column_privileges WHERE grantee = 'docs_reader'",
    ),
}


@pytest.mark.parametrize("reason", list(EXTRAS))
def test_what_a_swap_would_lose_keeps_the_merge_in_place(db, tables, reason, caplog):
    _role(db, "docs_reader")
    assert publish(tables.v1, db.uri).rc == 0
    create, check = EXTRAS[reason]
    for statement in create:
        db.query(statement)
    before = db.xmins()
    with caplog.at_level("INFO", logger="hub_embed"):
        assert publish(tables.v2, db.uri, "--rebuild-above", "0").rc == 0
    assert f"merging in place, since {reason}" in caplog.text
    assert changes(db) == {"mode": "merge", "inserted": 1, "updated": 2, "deleted": 1, "unchanged": 57, "staged": 3}
    assert {i: r[:3] for i, r in db.rows().items()} == {i: r[:3] for i, r in expected(tables.v2).items()}
    after = db.xmins()
    assert sum(after[i] == before[i] for i in before if i in after) == 57  # in place: the unchanged rows untouched
    assert db.query(check)[0][0] >= 1


@pytest.mark.parametrize("share", ["-0.1", "1e400"])
def test_a_bad_rebuild_share_is_refused_before_any_write(db, tables, share, capsys):
    result = publish(tables.v1, db.uri, "--rebuild-above", share, capsys=capsys)
    assert result.rc == 2 and "rebuild_above must be a share" in result.err
    assert "docs" not in db.relations()


def test_the_rebuild_share_takes_never_and_refuses_what_is_not_a_share(capsys):
    assert (
        publish_parser().parse_args(["t", "--to", "x", "--collection", "c", "--rebuild-above", "never"]).rebuild_above
        is None
    )
    with pytest.raises(SystemExit):
        publish_parser().parse_args(["t", "--to", "x", "--collection", "c", "--rebuild-above", "half"])
    assert "'half' is not a share (such as 0.15) or 'never'" in capsys.readouterr().err
    assert PublishOptions.from_dict({"rebuild_above": None}).rebuild_above is None
    for bad in (True, "0.2", -1):
        with pytest.raises(PublishError, match="rebuild_above"):
            PublishOptions.from_dict({"rebuild_above": bad})


# --------------------------------------------------------------------------- one vector space per collection


def test_a_table_of_another_module_is_refused_before_any_write_naming_both(db, tables, capsys):
    assert publish(tables.v1, db.uri).rc == 0
    before, entry = db.rows(), db.entry()
    result = publish(tables.other, db.uri, capsys=capsys)
    assert result.rc == 2
    other = sinks.read_table_manifest(tables.other)["table"]["fingerprint"]
    assert entry["fingerprint"] in result.err and other in result.err and "--replace" in result.err
    assert db.rows() == before and db.entry() == entry and db.work_left() == []


@pytest.mark.parametrize("case", ["columns", "halfvec"])
def test_other_columns_or_vector_type_are_refused_without_replace(db, tables, case, capsys):
    assert publish(tables.v1, db.uri).rc == 0
    entry = db.entry()
    table, flags = (tables.no_columns, ()) if case == "columns" else (tables.v1, ("--halfvec",))
    result = publish(table, db.uri, *flags, capsys=capsys)
    assert result.rc == 2 and "--replace" in result.err
    assert db.entry() == entry


def test_replace_builds_beside_and_swaps_atomically(db, tables):
    assert publish(tables.v1, db.uri).rc == 0
    app_role = _role(db, "docs_reader")
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


def test_a_dimension_pgvector_cannot_index_is_refused():
    with pytest.raises(PublishError, match="--index none.*--halfvec"):
        index_spec(PublishOptions(), dimension=3000, rows=10)
    assert index_spec(PublishOptions(halfvec=True), 3000, 10).opclass == "halfvec_cosine_ops"


# --------------------------------------------------------------------------- bad input, before any write


def _uncommitted(table, tmp_path):
    shutil.copytree(table, tmp_path / "t")
    os.remove(tmp_path / "t" / "_SUCCESS")
    return str(tmp_path / "t"), "not a committed table"


def _truncated(table, tmp_path):
    shutil.copytree(table, tmp_path / "t")
    part = tmp_path / "t" / sinks.read_table_manifest(table)["files"][0]["path"]
    part.write_bytes(part.read_bytes()[:100])
    return str(tmp_path / "t"), "cannot be read"


def _row_count_lies(table, tmp_path):
    shutil.copytree(table, tmp_path / "t")
    manifest = json.loads((tmp_path / "t" / "_SUCCESS").read_text())
    manifest["files"][0]["rows"] += 1
    (tmp_path / "t" / "_SUCCESS").write_text(json.dumps(manifest))
    return str(tmp_path / "t"), "its manifest says"


@pytest.mark.parametrize("damage", [_uncommitted, _truncated, _row_count_lies])
def test_an_uncommitted_or_corrupt_table_is_refused(db, tables, tmp_path, damage, capsys):
    table, message = damage(tables.v1, tmp_path)
    result = publish(table, db.uri, capsys=capsys)
    assert result.rc == 2 and message in result.err
    assert db.relations() == []


def test_a_missing_or_per_token_table_is_refused(db, tables, tmp_path, capsys):
    assert publish(str(tmp_path / "nothing"), db.uri, capsys=capsys).err.count("does not exist") == 1
    result = publish(tables.per_token, db.uri, capsys=capsys)
    assert result.rc == 2 and "per-token" in result.err and db.relations() == []


@pytest.mark.parametrize("name", ["Docs", "1docs", "my-docs", "docs;drop table x", "hub_embed_docs", "d" * 46, ""])
def test_a_collection_name_that_is_not_a_plain_identifier_is_refused(db, tables, name, capsys):
    result = publish_main([tables.v1, "--to", db.uri, "--collection", name])
    assert result == 2 and "collection" in capsys.readouterr().err
    assert db.relations() == []


def test_bad_databases_are_refused_with_a_clear_message_and_no_password(postgres, tables, capsys):
    wrong = "Wr0ng-pass-zz9"
    no_vector = postgres.database(vector=False)
    cases = {
        "the server refused the user name or password": postgres.uri(postgres.database(), PUBLISHER, wrong),
        "the database cannot be reached": f"postgresql://{PUBLISHER}:{PASSWORD}@127.0.0.1:9/x?connect_timeout=3",
        "the database does not exist": postgres.uri("no_such_db", PUBLISHER, PASSWORD),
        "the vector extension is not installed: the server offers pgvector": postgres.uri(
            no_vector, PUBLISHER, PASSWORD
        ),
        "cannot be parsed": f"postgresql://{PUBLISHER}:{PASSWORD}@/db?no_such_option=1",
    }
    for message, uri in cases.items():
        assert publish_main([tables.v1, "--to", uri, "--collection", "docs"]) == 2, message
        err = capsys.readouterr().err
        assert message in err and PASSWORD not in err and wrong not in err, err
    assert postgres.query(no_vector, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == [
        (0,)
    ]


def test_a_missing_schema_or_a_foreign_table_of_that_name_is_refused(db, tables, capsys):
    assert publish(tables.v1, db.uri, "--schema", "nope", capsys=capsys).rc == 2
    db.query("CREATE TABLE docs (x int)")
    result = publish(tables.v1, db.uri, capsys=capsys)
    assert result.rc == 2 and "not a hub-embed collection" in result.err and db.relations() == ["docs"]


def test_credentials_appear_in_no_output_log_or_catalogue(db, tables):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.publish", tables.v1, "--to", db.uri, "--collection", "docs", "--verbose"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    assert f"postgresql://{PUBLISHER}@/{db.name}" in proc.stdout
    everything = db.query("SELECT string_agg(row_to_json(c)::text, '') FROM hub_embed_catalogue c")[0][0]
    assert everything and PASSWORD not in everything
    assert repr(PublishConfig.create(tables.v1, db.uri, "docs")).count(PASSWORD) == 0


# --------------------------------------------------------------------------- concurrency and the API


def test_a_second_publish_of_a_collection_waits_for_none_and_fails_clearly(db, tables, postgres, capsys):
    import psycopg

    with psycopg.connect(postgres.uri(db.name), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('hub-embed:publish:public.docs'))")
        result = publish(tables.v1, db.uri, capsys=capsys)
    assert result.rc == 1 and "another publish" in result.err and PASSWORD not in result.err


def test_a_publish_planned_before_another_committed_fails_and_changes_nothing(db, tables):
    assert publish(tables.v1, db.uri).rc == 0
    cfg = PublishConfig.create(tables.v2, db.uri, "docs")
    stale_plan = prepare(cfg)
    assert publish(tables.other, db.uri, "--replace").rc == 0
    with pytest.raises(PublishFailed, match="changed while this publish ran"):
        run(cfg, stale_plan)
    assert db.rows() == expected(tables.other) and db.work_left() == []


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


# --------------------------------------------------------------------------- killed at any point, then run again

# Runs the command line with chunks of 16 rows and a SIGKILL of its own process at PUBLISH_KILL_AT.
KILLED_PUBLISH = """
import os, signal, sys, time
from pipelines.publish import catalogue, commit, publishing, source, staging
source.CHUNK_ROWS = 16
point = os.environ["PUBLISH_KILL_AT"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(module, name, when=lambda result: True):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(result):
            die()
        return result
    setattr(module, name, wrapper)

staged = []
if point == "staging":  # after the second chunk is committed
    after(staging, "stage_chunk", lambda result: staged.append(result) or len(staged) == 2)
elif point == "slow-staging":  # killed from outside
    original = staging.stage_chunk
    staging.stage_chunk = lambda *args: (time.sleep(0.5), original(*args))[1]
elif point == "index":  # the new collection's index is built, the swap not begun
    after(commit, "_create_index")
elif point == "commit":  # the commit transaction's last statement ran, COMMIT did not
    after(catalogue, "write")
elif point == "after-commit":
    after(publishing, "commit")
from pipelines.publish.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _killed_publish(table: str, uri: str, point: str, db: Db | None = None, flags: tuple[str, ...] = ()) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISH, table, "--to", uri, "--collection", "docs", *flags],
        cwd=REPO, env={**os.environ, "PUBLISH_KILL_AT": point}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if point == "slow-staging":  # SIGKILL the process group once a chunk is staged, from outside
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                "hub_embed_staged_chunks" in db.relations()
                and db.query("SELECT count(*) FROM hub_embed_staged_chunks")[0][0]
            ):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    return proc.wait(timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,point",
    [
        ("build", "staging"),
        ("build", "slow-staging"),
        ("build", "index"),
        ("build", "commit"),
        ("build", "after-commit"),
        ("merge", "staging"),
        ("merge", "commit"),
        ("merge", "after-commit"),
        ("beside", "index"),
        ("beside", "commit"),
    ],
)
def test_a_publish_killed_at_any_point_leaves_the_collection_as_it_was_and_a_rerun_completes_it(
    db, tables, mode, point, caplog, monkeypatch
):
    monkeypatch.setattr(source, "CHUNK_ROWS", 16)  # as the killed run's
    flags = ("--rebuild-above", "0") if mode == "beside" else ()  # "beside": a merge built beside the collection
    if mode != "build":
        assert publish(tables.v1, db.uri).rc == 0
    before, entry = (db.rows(), db.entry()) if mode != "build" else ({}, None)
    assert _killed_publish(tables.v2, db.uri, point, db, flags) == -signal.SIGKILL
    if point == "after-commit":
        assert {i: r[:3] for i, r in db.rows().items()} == {i: r[:3] for i, r in expected(tables.v2).items()}
    elif mode != "build":
        assert db.rows() == before and db.entry() == entry
    else:
        assert "docs" not in db.relations() and db.entry() is None
    with caplog.at_level("INFO", logger="hub_embed"):
        assert publish(tables.v2, db.uri, *flags).rc == 0
    assert changes(db).get("rebuilt", False) == (mode == "beside") or point == "after-commit"
    rows = db.rows()
    assert set(rows) == set(expected(tables.v2)) and db.query("SELECT count(*) FROM docs") == [(60,)]
    assert {i: r[:3] for i, r in rows.items()} == {i: r[:3] for i, r in expected(tables.v2).items()}
    if point == "staging":
        assert "2 of 4 chunks were staged by an earlier run of this publish" in caplog.text
    if point == "after-commit":
        assert changes(db) == {
            "mode": "merge", "inserted": 0, "updated": 0, "deleted": 0, "unchanged": 60, "staged": 0
        }  # fmt: skip
    assert db.work_left() == []


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
