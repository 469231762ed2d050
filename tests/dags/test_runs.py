"""DAG runs: `dag.test()` on tiny modules (embedding, re-embedding, fine-tune), and one run in real Airflow processes.

Everything runs offline against a temp AIRFLOW_HOME with SQLite
(`tests.fixtures.airflow_env`); the DAGs read their configs from a temp
folder through `HUB_EMBED_CONFIGS_DIR`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sqlite3
import time

import pytest

from tests.fixtures import airflow_env
from tests.fixtures.airflow_env import dagbag, write_config, write_lines
from tests.fixtures.dag_jobs import TEXTS, commit

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


# --------------------------------------------------------------------------- helpers


def asset_events(session, uri: str) -> list[dict]:
    """Extras of the events of the asset with `uri`, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    rows = session.scalars(
        select(AssetEvent)
        .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.uri == uri)
        .order_by(AssetEvent.id)
    )
    return [dict(row.extra) for row in rows]


# --------------------------------------------------------------------------- dag.test(): embedding


def vectors(table_dir: str) -> dict[str, list[float]]:
    """id -> embedding of a committed table."""
    from pipelines.embedding import sinks

    table = sinks.read_table(table_dir)
    return dict(zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()))


def record_table_report(run) -> str | None:
    """The `report` of the run's record_table XCom."""
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == "record_table"]
    return ti.xcom_pull(task_ids="record_table")["report"]


@pytest.mark.slow
def test_scheduled_runs_write_tables_and_reuse_the_previous_one(airflow_db, configs, tmp_path, tiny):
    """Two scheduled runs: the first embeds everything (no --reuse); the second reuses the first's vectors."""
    import datetime

    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    from pipelines.embedding import sinks

    output, source = tmp_path / "tables" / "tiny", tmp_path / "in.txt"
    write_config(
        configs,
        "tiny",
        input=write_lines(source, TEXTS),
        output=str(output),
        module=tiny.text,
        batch_size=4,
        schedule={"cron": "@daily"},
    )
    day = datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC)
    first = dagbag().dags["embed__tiny"].test(logical_date=day)
    assert first.state == DagRunState.SUCCESS  # `--reuse=` would be a config error (exit 2)
    first_dir = str(output / "20240301T000000")
    assert glob.glob(str(output / "*" / "_SUCCESS")) == [os.path.join(first_dir, "_SUCCESS")]
    manifest = sinks.read_table_manifest(first_dir)
    assert manifest["counts"]["rows_in"] == manifest["counts"]["rows_embedded"] == len(TEXTS)
    assert not (manifest.get("reuse") or {}).get("used")
    assert sinks.read_table(first_dir).num_rows == len(TEXTS)
    with create_session() as session:
        (event,) = asset_events(session, f"file://{output}")
    assert event["path"] == first_dir
    assert (
        event["rows_in"],
        event["rows_written"],
        event["rows_embedded"],
        event["rows_reused"],
        event["rows_failed"],
    ) == (len(TEXTS), len(TEXTS), len(TEXTS), 0, 0)
    assert event["reused_from"] is None and event["fingerprint"] == manifest["table"]["fingerprint"]
    assert event["report"] == os.path.join(first_dir, "_report.html") and os.path.isfile(event["report"])
    assert record_table_report(first) == event["report"]  # record_table's XCom

    write_lines(source, TEXTS + ["a sentence the first run never saw"])
    second = dagbag().dags["embed__tiny"].test(logical_date=day + datetime.timedelta(days=1))
    assert second.state == DagRunState.SUCCESS
    second_dir = str(output / "20240302T000000")
    tis = {ti.task_id: ti for ti in second.get_task_instances()}
    assert tis["plan"].xcom_pull(task_ids="plan")["reuse"] == first_dir
    reused = sinks.read_table_manifest(second_dir)
    reuse = reused.get("reuse") or {}
    assert (reuse.get("table"), reuse.get("run_id"), reuse.get("used")) == (first_dir, manifest["run_id"], True), reuse
    counts = reused["counts"]
    assert (counts["rows_written"], counts["rows_reused"], counts["rows_embedded"]) == (len(TEXTS) + 1, len(TEXTS), 1)
    old, new = vectors(first_dir), vectors(second_dir)
    assert len(new) == len(TEXTS) + 1 and {k: new[k] for k in old} == old
    with create_session() as session:
        event = asset_events(session, f"file://{output}")[-1]
    assert (event["path"], event["rows_written"], event["rows_reused"], event["rows_embedded"]) == (
        second_dir,
        len(TEXTS) + 1,
        len(TEXTS),
        1,
    )
    assert event["reused_from"] == {"table": first_dir, "run_id": manifest["run_id"]}


@pytest.mark.slow
def test_reembed_plans_only_the_jobs_of_the_updated_module(airflow_db, job_configs, tmp_path, monkeypatch):
    """A manual run naming module `tiny` plans tiny's re-embedding (Beam marked done) and skips the other job."""
    from airflow.utils.state import TaskInstanceState

    monkeypatch.setenv("HUB_EMBED_RETRIES", "0")
    commit(tmp_path / "tables" / "tiny", "20240101T000000", "tiny-v2/20240101T000000")  # other fingerprints
    update = {"name": "tiny", "version": 3, "handle": "/modules/tiny/3", "fingerprint": "sha256:x"}
    run = (
        dagbag()
        .dags["reembed_on_module_update"]
        .test(run_conf=update, mark_success_pattern=r".*\.(embed|record_table)")
    )
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["module_updates"].xcom_pull(task_ids="module_updates") == {"tiny": update}
    plan = tis["tiny.plan"].xcom_pull(task_ids="tiny.plan")
    assert plan["module"] == "/modules/tiny/3"
    assert os.path.dirname(plan["output"]) == str(tmp_path / "tables" / "tiny" / "tiny-v3")
    assert plan["reuse"] is None  # never a scheduled run's or another version's table
    assert tis["cloud.plan"].state == TaskInstanceState.SUCCESS and not tis["cloud.plan"].xcom_pull(
        task_ids="cloud.plan"
    )
    assert (tis["cloud.embed"].state, tis["cloud.record_table"].state) == (TaskInstanceState.SKIPPED,) * 2


# --------------------------------------------------------------------------- dag.test(): fine-tune and release


@pytest.fixture
def release_run(airflow_db, configs, parent_root, tmp_path, monkeypatch):
    """A fresh copy of the modules root and the conf of a fine-tune run on it (no retries)."""
    from tests.fixtures import release

    monkeypatch.setenv("HUB_EMBED_RETRIES", "0")
    root = release.copy_root(parent_root, tmp_path / "modules")
    conf = {
        "module": os.path.join(root, "tiny", "1"),
        "data": release.write_labeled(str(tmp_path / "data.jsonl")),
        "output_root": root,
        "steps": 3,
    }
    return root, conf


def module_events() -> list[dict]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return asset_events(session, "hub-module://tiny/")


@pytest.mark.slow
def test_finetune_dag_publishes_the_next_version(release_run):
    from airflow.utils.state import DagRunState

    from pipelines.hub.module_manifest import read_module_manifest

    root, conf = release_run
    before = len(module_events())
    run = dagbag().dags["finetune_and_reexport"].test(run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    version = os.path.join(root, "tiny", "2")
    manifest = read_module_manifest(version)
    assert manifest["parent"]["version"] == 1
    assert os.readlink(os.path.join(root, "tiny", "latest")) == "2"
    events = module_events()
    assert len(events) == before + 1
    assert events[-1] == {"name": "tiny", "version": 2, "fingerprint": manifest["fingerprint"], "handle": version}


@pytest.mark.slow
def test_finetune_dag_with_a_broken_export_publishes_nothing(release_run, monkeypatch, tmp_path):
    """The export has the wrong output dimension: validate fails, nothing moves, no event."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    from pipelines import export
    from pipelines.finetune import release
    from tests.fixtures import tiny_modules as tm

    root, conf = release_run

    def broken_finetune(cmd):
        narrow = tm.build_text_module(str(tmp_path / "narrow"), dim=4)
        return export.export_module(narrow, root, "tiny", parent=export.module_ref(conf["module"])).path

    monkeypatch.setattr(release, "run_finetune", broken_finetune)
    before = len(module_events())
    run = dagbag().dags["finetune_and_reexport"].test(run_conf=conf)
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {
        "finetune": TaskInstanceState.SUCCESS,
        "validate": TaskInstanceState.FAILED,
        "publish": TaskInstanceState.UPSTREAM_FAILED,
    }
    assert not os.path.lexists(os.path.join(root, "tiny", "latest"))
    assert export.list_versions(root, "tiny") == [1]
    assert [e for e in os.listdir(os.path.join(root, "tiny")) if e.startswith(".rejected-2-")]
    assert len(module_events()) == before


# --------------------------------------------------------------------------- real Airflow processes


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_module_event_triggers_reembedding_in_a_running_airflow(airflow_db, tmp_path, tiny):
    """API server + scheduler + dag-processor on 127.0.0.1: a `hub-module://tiny` event re-embeds the tiny job."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(airflow_db + ".template", home / "airflow.db")
    configs, base = tmp_path / "configs", tmp_path / "tables" / "tiny"
    write_config(
        configs,
        "tiny",
        input=write_lines(tmp_path / "in.txt", TEXTS),
        output=str(base),
        module=str(tmp_path / "modules" / "tiny" / "latest"),
        batch_size=4,
        schedule={"cron": None},
    )
    old_table = base / "20240101T000000"  # an earlier table: the report compares with it; it must stay as it is
    from pipelines import embed

    assert (
        embed.main(
            ["--input", str(tmp_path / "in.txt"), "--module", tiny.text, "--output", str(old_table), "--no-report"]
        )
        == 0
    )
    old_files = {name: (old_table / name).read_bytes() for name in os.listdir(old_table)}
    airflow = airflow_env.AirflowProcesses(str(home), {"HUB_EMBED_CONFIGS_DIR": str(configs), "HUB_EMBED_RETRIES": "0"})
    deadline = time.monotonic() + 240

    def module_asset_id():
        status, body = airflow.api("GET", "assets?uri_pattern=hub-module://tiny")
        return status == 200 and next((a["id"] for a in body["assets"] if a["uri"] == "hub-module://tiny/"), None)

    def dag_active():
        status, body = airflow.api("GET", "dags/reembed_on_module_update")
        return status == 200 and not body["is_paused"] and not body.get("is_stale")

    def finished_run():
        status, body = airflow.api("GET", "dags/reembed_on_module_update/dagRuns")
        runs = body.get("dag_runs", []) if status == 200 else []
        return next((run for run in runs if run["state"] in ("success", "failed")), None)

    airflow.start()
    try:
        airflow.wait_for("the API server", lambda: airflow.api("GET", "monitor/health")[0] == 200, deadline)
        asset_id = airflow.wait_for("the module asset", module_asset_id, deadline)
        airflow.wait_for("reembed_on_module_update", dag_active, deadline)
        extra = {"name": "tiny", "version": 7, "fingerprint": "sha256:test", "handle": tiny.text}
        status, event = airflow.api("POST", "assets/events", {"asset_id": asset_id, "extra": extra})
        assert status == 200, event
        run = airflow.wait_for("the re-embedding run", finished_run, deadline)
        assert run["state"] == "success", "\n".join(airflow.logs(n) for n in airflow.COMPONENTS)
    finally:
        airflow.stop()

    (success,) = glob.glob(str(base / "tiny-v7" / "*" / "_SUCCESS"))
    from pipelines.embedding import sinks

    table = os.path.dirname(success)
    manifest = sinks.read_table_manifest(table)
    assert manifest["counts"]["rows_embedded"] == len(TEXTS)
    assert manifest["table"]["module"] == tiny.text
    assert {name: (old_table / name).read_bytes() for name in os.listdir(old_table)} == old_files

    # The plan named the old table as the previous one; the report compares with it; its path is in XCom and logs.
    report = os.path.join(table, "_report.html")
    with open(report) as f:
        assert f"<h2>Compared with <code>{old_table}</code></h2>" in f.read()
    with sqlite3.connect(home / "airflow.db") as db:
        xcoms = {
            task: json.loads(value)
            for task, value in db.execute("SELECT task_id, value FROM xcom WHERE key = 'return_value'")
        }
    assert xcoms["tiny.plan"]["previous"] == str(old_table)
    assert xcoms["tiny.record_table"]["report"] == report
    logs = {
        task: "".join(
            open(path, errors="replace").read()
            for path in glob.glob(str(home / "logs" / "**" / f"task_id={task}" / "*.log"), recursive=True)
        )
        for task in ("tiny.embed", "tiny.record_table")
    }
    assert re.search(r"report: \S*_report\.html", logs["tiny.embed"]), logs["tiny.embed"][-3000:]
    assert f"report: {report}" in logs["tiny.record_table"]
