"""Parsing the Airflow DAG folder: the DAGs and their tasks, their wiring from the configs, import errors, parse time.

Everything runs offline against a temp AIRFLOW_HOME with SQLite
(`tests.fixtures.airflow_env`); the DAGs read their configs from a temp
folder through `HUB_EMBED_CONFIGS_DIR`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.fixtures import airflow_env
from tests.fixtures.airflow_env import dagbag, write_config

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


def _run_beside_a_foreign_common(command: list[str], tmp_path, timeout_s: int) -> subprocess.CompletedProcess:
    """Runs `command` in `tmp_path` with only a folder holding another project's `common` module on PYTHONPATH."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "common.py").write_text("raise ImportError('another project's common module')\n")
    env = {**os.environ, "PYTHONPATH": str(foreign)}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=tmp_path)


def test_a_plain_dagbag_in_a_fresh_process_parses_the_folder(job_configs, tmp_path):
    """The usual DAG-integrity test: `DagBag(dag_folder)` with nothing put on sys.path, and a foreign `common` on it."""
    out = _run_beside_a_foreign_common(
        [sys.executable, "-c", PLAIN_DAGBAG_SCRIPT, airflow_env.DAGS_FOLDER], tmp_path, 120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert airflow_env.DAGS_FOLDER not in report["path"]
    assert report["errors"] == {}
    assert report["dags"] == sorted(EXPECTED_TASKS)


def test_the_airflow_cli_parses_the_folder(airflow_db, job_configs, tmp_path):
    """`airflow dags list --local` (the CLI's own DagBag, as `airflow dags test` uses) with a foreign `common` on PYTHONPATH."""
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    out = _run_beside_a_foreign_common([airflow, "dags", "list", "--local", "-o", "json"], tmp_path, 180)
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
