"""What a publish refuses, before any write, and what fails clearly, changing nothing.

One vector space per collection (another module, other columns or vector type need `--replace`), a
dimension pgvector cannot index, uncommitted, corrupt, missing or per-token tables, bad collection names,
bad databases, a missing schema; credentials in no output; a second publish at once, a stale plan.
Real PostgreSQL with pgvector and real tables, as in `test_publish.py`; tests connect as a role that
logs in with a password, which no output may show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipelines.embedding import sinks
from pipelines.publish.__main__ import main as publish_main
from pipelines.publish.errors import PublishError, PublishFailed
from pipelines.publish.index import index_spec
from pipelines.publish.options import PublishConfig, PublishOptions
from pipelines.publish.plan import prepare
from pipelines.publish.publishing import run
from tests.fixtures.postgres import PASSWORD, PUBLISHER
from tests.fixtures.publish_cases import REPO, expected, publish

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


# --------------------------------------------------------------------------- a second publish, a stale plan


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
