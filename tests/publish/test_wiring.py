"""A job config's `publish:` section: checked with the config, published by `pipelines.embed` after its commit and
by the embedding DAG's `publish` task, against a real PostgreSQL with pgvector (`tests/fixtures/postgres.py`).

The DAG runs with `dag.test()` on SQLite (`tests.fixtures.airflow_env`); its database comes from an Airflow
connection in an `AIRFLOW_CONN_*` variable, and its password must reach no log, XCom or rendered field.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import sqlite3

import pytest

from tests.fixtures import airflow_env
from tests.fixtures.airflow_env import dagbag, write_config
from tests.fixtures.postgres import PASSWORD, PUBLISHER, Db, embed_table, write_jsonl

airflow_env.activate()  # before anything imports airflow

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

ROWS = [(f"r{i}", f"sentence {i} about {'apples' if i % 2 else 'cars'}", "en" if i % 3 else "fr") for i in range(20)]


def job_file(tmp_path, publish: dict, **values) -> str:
    """A job file embedding `ROWS` (JSONL with a `lang` passthrough) with a `publish:` section."""
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    return write_config(
        tmp_path,
        "job",
        input=source,
        id_field="id",
        passthrough=["lang"],
        output=str(tmp_path / "table"),
        publish=publish,
        **values,
    )


def table_ids(table: str) -> set[str]:
    from pipelines.embedding import sinks

    return set(sinks.read_table(table).column("id").to_pylist())


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    "section, message",
    [
        ({"collection": "docs", "to": f"postgresql://u:{PASSWORD}@h/db"}, "publish.to .* holds a password"),
        ({"collection": "docs", "to": f"host=h user=u password={PASSWORD}"}, "publish.to .* holds a password"),
        ({"collection": "docs", "to": f"postgresql://u@h/db?password={PASSWORD}"}, "publish.to .* holds a password"),
        ({"collection": "docs"}, "exactly one of conn_id, to_env, to"),
        ({"collection": "docs", "conn_id": "pg", "to_env": "PG_URI"}, "not conn_id and to_env"),
        ({"collection": "docs", "to_env": "not a name"}, "to_env must be an environment variable name"),
        ({"to_env": "PG_URI"}, "needs 'collection'"),
        ({"collection": "docs", "to_env": "PG_URI", "indx": "hnsw"}, "did you mean 'index'"),
        ({"collection": "docs", "to_env": "PG_URI", "halfvec": "yes"}, "publish.halfvec must be true or false"),
        ({"collection": "Docs", "to_env": "PG_URI"}, "collection 'Docs' is not a valid identifier"),
        ({"collection": "hub_embed_docs", "to_env": "PG_URI"}, "hub-embed's own"),
        ({"collection": "docs", "to_env": "PG_URI", "index": "flat"}, "index 'flat' is not one of"),
        ({"collection": "docs", "to_env": "PG_URI", "replace": True, "keep_missing": True}, "cannot --keep-missing"),
        ({"collection": "docs", "to_env": "PG_URI", "rebuild_above": "half"}, "publish.rebuild_above must be a share"),
        ({"collection": "docs", "to_env": "PG_URI", "rebuild_above": True}, "publish.rebuild_above must be a share"),
        ({"collection": "docs", "to_env": "PG_URI", "rebuild_above": -0.5}, "rebuild_above must be a share"),
        ("docs", "'publish' .* must be a mapping"),
    ],
)
def test_a_bad_publish_section_is_a_config_error(tmp_path, section, message):
    from pipelines.embedding import config

    with pytest.raises(config.ConfigError, match=message) as raised:
        config.load(["--config", job_file(tmp_path, section)])
    assert PASSWORD not in str(raised.value)


def test_a_publish_section_is_read_and_leaves_the_table_content_alone(tmp_path):
    from pipelines.embedding import config, publish_section
    from pipelines.publish.options import PublishOptions

    section = {"collection": "docs", "to": "postgresql://reader@db.example.com/vectors?sslmode=require"}
    cfg = config.load(["--config", job_file(tmp_path, {**section, "index": "ivfflat", "halfvec": True})])
    assert cfg.publish == publish_section.PublishSection(
        collection="docs", index="ivfflat", halfvec=True, to=section["to"]
    )
    plain = config.load(["--config", write_config(tmp_path, "plain", **{**_job_keys(tmp_path)})])
    assert "publish" not in cfg.to_dict() and cfg.config_hash() == plain.config_hash()
    assert cfg.publish.options().vector_type == "halfvec"
    assert cfg.publish.options().rebuild_above == PublishOptions().rebuild_above == 0.15
    for given, meant in (("never", None), (0.3, 0.3), (1, 1.0)):
        read = config.load(["--config", job_file(tmp_path, {**section, "rebuild_above": given})])
        assert read.publish.options().rebuild_above == meant


def _job_keys(tmp_path) -> dict:
    return {
        "input": str(tmp_path / "in.jsonl"),
        "id_field": "id",
        "passthrough": ["lang"],
        "output": str(tmp_path / "table"),
    }


def test_an_airflow_connection_is_refused_by_the_command_before_it_embeds(tmp_path, tiny, capsys):
    from pipelines import embed

    path = job_file(tmp_path, {"collection": "docs", "conn_id": "hub_pg"}, module=tiny.text)
    assert embed.main(["--config", path]) == 2
    assert "only the DAG's publish task reads" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "table" / "_SUCCESS")


# --------------------------------------------------------------------------- python -m pipelines.embed


def test_embed_publishes_the_committed_table_after_its_commit(tmp_path, tiny, db, monkeypatch, capsys):
    from pipelines import embed

    monkeypatch.setenv("HUB_EMBED_CACHE_DIR", str(tmp_path / "module-cache"))
    monkeypatch.setenv("PUBLISH_DB", db.uri)  # the URI, password included, only in the environment
    path = job_file(tmp_path, {"collection": "docs", "to_env": "PUBLISH_DB"}, module=tiny.text)
    assert embed.main(["--config", path]) == 0
    out = capsys.readouterr()
    table = str(tmp_path / "table")
    assert os.path.exists(os.path.join(table, "_SUCCESS"))
    assert "Published" in out.out and "into public.docs" in out.out
    assert PASSWORD not in out.out + out.err
    rows = db.rows("docs")
    assert set(rows) == table_ids(table) == {r[0] for r in ROWS}
    assert {k: v[2] for k, v in rows.items()} == {r[0]: r[2] for r in ROWS}
    from pipelines.embedding import sinks

    run_id = sinks.read_table_manifest(table)["run_id"]
    assert {v[3] for v in rows.values()} == {run_id}
    assert db.entry("docs")["source_run_id"] == run_id


def test_a_failed_publish_is_exit_2_in_one_line_and_the_table_stays_committed(
    tmp_path, tiny, postgres, monkeypatch, capsys
):
    from pipelines import embed

    no_vector = Db(postgres, postgres.database(vector=False))
    monkeypatch.setenv("HUB_EMBED_CACHE_DIR", str(tmp_path / "module-cache"))
    monkeypatch.setenv("PUBLISH_DB", no_vector.uri)
    path = job_file(tmp_path, {"collection": "docs", "to_env": "PUBLISH_DB"}, module=tiny.text)
    assert embed.main(["--config", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hub-embed: error: the table is committed, but publishing it failed: ")
    assert "vector" in err[0] and PASSWORD not in err[0]
    assert table_ids(str(tmp_path / "table")) == {r[0] for r in ROWS}
    assert "docs" not in no_vector.relations()


# --------------------------------------------------------------------------- the DAG


class _Printed(io.StringIO):
    """What a DAG run prints; kept after the run, which closes the streams it logged to."""

    def close(self) -> None:
        pass


def test_the_dag_publishes_from_an_airflow_connection_and_the_password_stays_out(
    tmp_path, tiny, db, monkeypatch, caplog
):
    """The `publish` task after `embed` (marked done over a table embedded here) loads the run's table."""
    from airflow.utils.state import DagRunState

    monkeypatch.setenv("HUB_EMBED_RETRIES", "0")
    configs = tmp_path / "configs"
    monkeypatch.setenv("HUB_EMBED_CONFIGS_DIR", str(configs))
    host = db.server.socket_dir
    connection = {"conn_type": "postgres", "host": host, "login": PUBLISHER, "password": PASSWORD, "schema": db.name}
    monkeypatch.setenv("AIRFLOW_CONN_HUB_PG", json.dumps(connection))
    # A job name of its own: the session's Airflow DB keeps other tests' `tiny` table asset, and two assets
    # of one name with other URIs leave the newer one inactive.
    output = tmp_path / "tables" / "tinypub"
    write_config(
        configs,
        "tinypub",
        input=write_jsonl(tmp_path / "in.jsonl", ROWS),
        id_field="id",
        passthrough=["lang"],
        output=str(output),
        module=tiny.text,
        schedule={"cron": "@daily"},
        publish={"collection": "docs", "conn_id": "hub_pg"},
    )
    airflow_env.init_db()
    bag = dagbag()
    assert bag.import_errors == {}
    dag = bag.dags["embed__tinypub"]
    assert set(dag.task_ids) == {"plan", "embed", "record_table", "publish"}
    assert dag.get_task("publish").upstream_task_ids == {"embed", "plan"}
    assert not any("publish" in key or "collection" in key for key in dag.get_task("embed").pipeline_options)

    output.mkdir(parents=True)
    table = embed_table(output / "20240301T000000", tiny.text, ROWS)  # what the marked-done embed task writes
    printed = _Printed()  # the DAG run's output: `dag.test` runs the tasks here and prints their logs
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), caplog.at_level("INFO"):
        run = dag.test(logical_date=datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC), mark_success_pattern="embed")
    assert run.state == DagRunState.SUCCESS
    assert set(db.rows("docs")) == table_ids(table)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    result = tis["publish"].xcom_pull(task_ids="publish")
    assert (result["collection"], result["mode"], result["inserted"]) == ("public.docs", "build", len(ROWS))
    assert result["table"] == table and PUBLISHER in result["database"]

    with sqlite3.connect(os.path.join(airflow_env.activate(), "airflow.db")) as con:
        stored = [str(row) for row in con.execute("SELECT * FROM xcom")]
        stored += [str(row) for row in con.execute("SELECT * FROM rendered_task_instance_fields")]
    assert any("public.docs" in row for row in stored)
    assert PASSWORD not in "\n".join(stored), "the password reached an XCom or a rendered field"
    # `dag.test` writes no task log file (the walk below would check it): the publish task's log as Airflow
    # shows it is what the run printed, and what it logged through `logging`.
    task_log = printed.getvalue() + caplog.text
    assert "task_id='publish'" in task_log and "'collection': 'public.docs'" in task_log
    assert PASSWORD not in task_log, "the password reached the publish task's log"
    for folder, _, names in os.walk(airflow_env.activate()):  # the Airflow home: its logs and its metadata DB
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                assert PASSWORD.encode() not in f.read(), f"the password reached {os.path.join(folder, name)}"
