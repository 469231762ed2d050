"""The Airflow DAGs: integrity, `dag.test()` runs on tiny modules, and one run with real Airflow processes.

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
import subprocess
import sys
import textwrap
import time

import pytest

from tests.fixtures import airflow_env
from tests.fixtures.airflow_env import dagbag, write_config, write_lines

airflow_env.activate()  # before anything imports airflow

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

EXPECTED_TASKS = {
    "embed__tiny": {"plan", "embed", "record_table"},
    "embed__cloud": {"plan", "embed", "record_table"},
    "finetune_and_reexport": {"finetune", "validate", "publish"},
    "reembed_on_module_update": {
        "module_updates",
        "tiny.plan",
        "tiny.embed",
        "tiny.record_table",
        "cloud.plan",
        "cloud.embed",
        "cloud.record_table",
    },
}
TEXTS = [f"sentence number {i} about {'apples and pears' if i % 2 else 'cars and trucks'}" for i in range(12)]


# --------------------------------------------------------------------------- helpers


def commit(folder, *names: str) -> None:
    """Makes each `<folder>/<name>/` look committed (a `_SUCCESS` file; the finder reads no more)."""
    for name in names:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        with open(os.path.join(folder, name, "_SUCCESS"), "w") as f:
            f.write("{}")


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


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def airflow_db():
    """Creates the metadata DB once per session (SQLite in the temp AIRFLOW_HOME), and its pristine `.template` copy."""
    return airflow_env.init_db()


@pytest.fixture
def job_configs(configs, tmp_path):
    """A local DirectRunner job for module `tiny` and a Dataflow job, both scheduled."""
    write_config(
        configs,
        "tiny",
        input=write_lines(tmp_path / "in.txt", TEXTS),
        output=str(tmp_path / "tables" / "tiny"),
        module=str(tmp_path / "modules" / "tiny" / "latest"),
        batch_size=4,
        schedule={"cron": "@daily"},
    )
    write_config(
        configs,
        "cloud",
        input="gs://bucket/in/*.txt",
        output="gs://bucket/tables/cloud",
        module="gs://bucket/modules/enc/3.tar.gz",
        passthrough=["lang", "source"],
        beam={
            "runner": "DataflowRunner",
            "region": "europe-west1",
            "max_num_workers": 4,
            "setup_file": "./pyproject.toml",
            "requirements_cache": "build/requirements-cache",
        },
        schedule={"cron": None, "dataflow": {"project": "proj", "temp_location": "gs://bucket/tmp"}},
    )
    write_config(configs, "unscheduled", input="x.txt", output="y")
    return configs


# --------------------------------------------------------------------------- integrity


def test_dagbag_has_the_dags_and_tasks(job_configs):
    bag = dagbag()
    assert bag.import_errors == {}
    assert {dag_id: set(dag.task_ids) for dag_id, dag in bag.dags.items()} == EXPECTED_TASKS
    for dag in bag.dags.values():
        dag.check_cycle()  # raises on a cycle
        for t in dag.tasks:
            assert t.owner == "hub-embed" and t.retries >= 1, (dag.dag_id, t.task_id)
            assert t.retry_delay.total_seconds() > 0


def test_embedding_tasks_are_wired_from_the_config(job_configs):
    bag = dagbag()
    local = bag.dags["embed__tiny"]
    embed = local.get_task("embed")
    assert type(embed).__mro__[1].__name__ == "BeamRunPythonPipelineOperator"
    assert (embed.py_file, embed.py_options, embed.runner, embed.py_interpreter) == (
        "pipelines.embed",
        ["-m"],
        "DirectRunner",
        sys.executable,
    )
    assert embed.pipeline_options["batch_size"] == "4" and embed.pipeline_options["overwrite"] is True
    assert "ti.xcom_pull(task_ids='plan')['output']" in embed.pipeline_options["output"]
    assert "ti.xcom_pull(task_ids='plan')['reuse'] or ''" in embed.pipeline_options["reuse"]
    assert local.schedule == "@daily" and bag.dags["embed__cloud"].schedule is None
    assert [a.name for a in local.get_task("record_table").outlets] == ["hub-embed-table://tiny"]

    cloud = bag.dags["embed__cloud"].get_task("embed")
    assert cloud.runner == "DataflowRunner"
    assert cloud.dataflow_config == {"job_name": "embed-cloud", "project_id": "proj", "location": "europe-west1"}
    assert cloud.pipeline_options["temp_location"] == "gs://bucket/tmp"
    assert cloud.pipeline_options["passthrough"] == "lang,source" and cloud.pipeline_options["max_num_workers"] == 4
    assert cloud.pipeline_options["setup_file"] == os.path.join(airflow_env.REPO, "pyproject.toml")
    # Every Beam option that names a local file is taken from the project root (paths.BEAM_PATH_OPTIONS).
    assert cloud.pipeline_options["requirements_cache"] == os.path.join(airflow_env.REPO, "build", "requirements-cache")
    assert "runner" not in cloud.pipeline_options

    reembed = bag.dags["reembed_on_module_update"]
    assert sorted(a.uri for a in reembed.timetable.asset_condition.objects) == [
        "hub-module://enc/",
        "hub-module://tiny/",
    ]
    assert "task_ids='tiny.plan'" in reembed.get_task("tiny.embed").pipeline_options["module"]
    # A re-embedding's report compares with the plan's previous table; a scheduled run's compares with nothing.
    compare = reembed.get_task("tiny.embed").pipeline_options["report_compare"]
    assert "ti.xcom_pull(task_ids='tiny.plan')['previous'] or ''" in compare
    assert "report_compare" not in embed.pipeline_options


def test_bad_scheduled_config_is_an_import_error_naming_the_file(configs):
    path = write_config(
        configs, "broken", input="a.txt", output="b", schedule={"cron": "@daily", "runner": "FlinkRunner"}
    )
    errors = dagbag().import_errors
    assert any(path in message and "FlinkRunner" in message for message in errors.values()), errors


def test_scheduled_config_cannot_set_reuse(configs):
    path = write_config(configs, "fixed", input="a.txt", output="b", reuse="old/table", schedule={"cron": "@daily"})
    errors = dagbag().import_errors
    assert any(path in message and "cannot set 'reuse'" in message for message in errors.values()), errors


PARSE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from airflow.dag_processing.dagbag import BundleDagBag
    folder = sys.argv[1]
    start = time.perf_counter()
    bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name="dags-folder")
    seconds = time.perf_counter() - start
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "apache_beam", "tensorflow_hub", "keras"))
    print(json.dumps({"seconds": seconds, "heavy": heavy, "dags": sorted(bag.dags), "errors": bag.import_errors}))
    """
)


@pytest.mark.serial  # a time limit on parsing, which a busy parallel neighbour would skew
def test_parsing_is_fast_and_imports_no_tensorflow(job_configs):
    """A fresh interpreter (Airflow imported first) parses the whole folder in < 2 s without TF or Beam."""
    out = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, airflow_env.DAGS_FOLDER],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert set(report["dags"]) == set(EXPECTED_TASKS)
    assert report["heavy"] == []
    assert report["seconds"] < 2.0, report


PLAIN_DAGBAG_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(sys.argv[1])
    print(json.dumps({"dags": sorted(bag.dags), "errors": bag.import_errors, "path": sys.path}))
    """
)


def test_a_plain_dagbag_in_a_fresh_process_parses_the_folder(job_configs, tmp_path):
    """The usual DAG-integrity test: `DagBag(dag_folder)` with nothing put on sys.path, and a foreign `common` on it."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "common.py").write_text("raise ImportError('another project's common module')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(foreign)
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_DAGBAG_SCRIPT, airflow_env.DAGS_FOLDER],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert airflow_env.DAGS_FOLDER not in report["path"]
    assert report["errors"] == {}
    assert report["dags"] == sorted(EXPECTED_TASKS)


def test_the_airflow_cli_parses_the_folder(airflow_db, job_configs, tmp_path):
    """`airflow dags list --local` (the CLI's own DagBag, as `airflow dags test` uses) with a foreign `common` on PYTHONPATH."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "common.py").write_text("raise ImportError('another project's common module')\n")
    env = {**os.environ, "PYTHONPATH": str(foreign)}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    out = subprocess.run(
        [airflow, "dags", "list", "--local", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    listed = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("[")))
    assert sorted(d["dag_id"] for d in listed) == sorted(EXPECTED_TASKS), out.stdout
    assert "Failed to load" not in out.stderr and "import error" not in out.stderr.lower(), out.stderr


def test_repo_configs_parse(monkeypatch):
    """The DAGs of the configs shipped in configs/ load without errors."""
    monkeypatch.delenv("HUB_EMBED_CONFIGS_DIR", raising=False)
    bag = dagbag()
    assert bag.import_errors == {}
    assert {"finetune_and_reexport", "reembed_on_module_update"} <= set(bag.dags)


# --------------------------------------------------------------------------- the previous committed run


def test_previous_table_is_the_newest_earlier_committed_run(tmp_path):
    from pipelines.orchestration import plans

    base = tmp_path / "tables"
    assert plans.previous_table(str(base), "20240105T000000") is None  # first run: no folder yet
    commit(base, "20240101T000000", "20240102T000000", "20240103T000000", "20240104T000000")
    commit(base, "tiny-v2/20240102T120000", "notes")  # a re-embedding folder, not a run stamp
    (base / "20240102T000000-500000").mkdir()  # a later run that never committed
    (base / "20240102T000000-500000" / "part-00000.parquet").write_bytes(b"x")
    (base / "20240102T060000.tmp").mkdir()

    assert plans.previous_table(str(base), "20240101T000000") is None  # nothing committed before the first
    assert plans.previous_table(str(base), "20240103T000000") == str(base / "20240102T000000")  # not its own (a retry)
    assert plans.previous_table(str(base) + "/", "20240103T000000-000001") == str(base / "20240103T000000")
    assert plans.previous_table(str(base), "20240110T000000") == str(base / "20240104T000000")
    assert plans.previous_table(str(base / "tiny-v2"), "20240110T000000") == str(base / "tiny-v2" / "20240102T120000")


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_previous_table_on_an_object_store(store, request):
    """gs:// and s3:// through Beam's filesystems, against the local servers."""
    from pipelines.orchestration import plans

    if store == "gcs":
        bucket = request.getfixturevalue("gcs_server").client().create_bucket("tables-prev")
        put, base = (lambda key: bucket.blob(key).upload_from_string(b"{}")), "gs://tables-prev/jobs/tiny"
    else:
        client = request.getfixturevalue("s3_server").client()
        client.create_bucket(Bucket="tables-prev")
        put, base = (
            (lambda key: client.put_object(Bucket="tables-prev", Key=key, Body=b"{}")),
            "s3://tables-prev/jobs/tiny",
        )
    assert plans.previous_table(base, "20240105T000000") is None
    for key in (
        "20240101T000000/_SUCCESS",
        "20240102T000000/part-00000.parquet",
        "20240103T000000/_SUCCESS",
        "tiny-v2/20240104T000000/_SUCCESS",
        "jobs-other/20240104T000000/_SUCCESS",
    ):
        put("jobs/tiny/" + key)
    put("jobs/tiny-other/20240104T000000/_SUCCESS")  # shares the prefix `jobs/tiny`, not the folder
    assert plans.previous_table(base, "20240103T000000") == base + "/20240101T000000"
    assert plans.previous_table(base, "20240105T000000") == base + "/20240103T000000"


def test_plans_offer_only_their_own_folder_for_reuse(tmp_path):
    """A scheduled run reuses the base folder's runs; a re-embedding only earlier runs of its own module version."""
    from pipelines.orchestration import plans

    base = tmp_path / "tables"
    commit(base, "20240101T000000", "tiny-v2/20240102T000000")
    update = {"name": "tiny", "version": 3, "handle": "/modules/tiny/3"}
    assert plans.scheduled_plan(str(base), "/m", "20240103T000000") == {
        "module": "/m",
        "output": str(base / "20240103T000000"),
        "reuse": str(base / "20240101T000000"),
    }
    plan = plans.reembed_plan(update, "tiny", str(base), "20240103T000000")
    assert plan == {
        "module": "/modules/tiny/3",
        "output": str(base / "tiny-v3" / "20240103T000000"),
        "reuse": None,
        "previous": None,  # `commit` writes manifests without table metadata: nothing to compare with
    }
    commit(base, "tiny-v3/20240102T000000")
    assert plans.reembed_plan(update, "tiny", str(base), "20240103T000000")["reuse"] == str(
        base / "tiny-v3" / "20240102T000000"
    )
    assert plans.scheduled_plan(str(base), "/m", "20240103T000000")["reuse"] == str(base / "20240101T000000")


def commit_table(folder, name: str, module_name: str | None, version: int | None, **table) -> None:
    """Makes `<folder>/<name>/` look like a committed table of `module_name` v`version` (its manifest's table entry)."""
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    entry = {"fingerprint": f"sha256:{name}", "dimension": 8, "module_name": module_name, "module_version": version}
    with open(os.path.join(folder, name, "_SUCCESS"), "w") as f:
        json.dump({"files": [], "table": {**entry, **table}}, f)


def test_reembed_compares_with_the_newest_table_of_an_earlier_version(tmp_path):
    """The plan's `previous`: the newest run before this one whose module version is earlier (or unknown)."""
    from pipelines.orchestration import plans

    base = tmp_path / "tables"
    update = {"name": "tiny", "version": 3, "handle": "/modules/tiny/3"}

    def previous(stamp: str = "20240110T000000", version: int = 3) -> str | None:
        assert plans.reembed_plan({**update, "version": version}, "tiny", str(base), stamp)["previous"] == (
            found := plans.previous_version_table(str(base), "tiny", version, stamp)
        )
        return found

    assert previous() is None  # no folder yet
    commit_table(base, "20240101T000000", "tiny", 1)
    assert previous() == str(base / "20240101T000000")
    commit_table(base, "tiny-v2/20240102T000000", "tiny", 2)
    assert previous() == str(base / "tiny-v2" / "20240102T000000")
    commit_table(base, "20240103T000000", "tiny", 3)  # a scheduled run already on v3 (handle `latest`)
    commit_table(base, "tiny-v3/20240104T000000", "tiny", 3)  # this version's own earlier run: reuse, not previous
    commit_table(base, "tiny-v4/20240105T000000", "tiny", 4)  # a later version
    commit_table(base, "20240106T000000", "tiny", 2, sequence=True)  # per-token vectors: no neighbours to compare
    commit(base, "20240107T000000")  # a manifest without table metadata
    assert previous() == str(base / "tiny-v2" / "20240102T000000")
    commit_table(base, "20240108T000000", "other", 9)  # another module's table: its version says nothing
    commit_table(base, "20240109T000000", None, None)  # a module without a module.json
    assert previous() == str(base / "20240109T000000")
    assert previous("20240109T000000") == str(base / "20240108T000000")  # only runs before this one
    assert previous("20240101T000000") is None
    assert previous("20240106T000000", version=5) == str(base / "tiny-v4" / "20240105T000000")


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
