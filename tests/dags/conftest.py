"""Fixtures of the DAG tests: the Airflow metadata DB and the job configs the DAGs schedule.

Airflow is pointed at a temp AIRFLOW_HOME with SQLite here, before any test module imports it.
"""

from __future__ import annotations

import pytest

from tests.fixtures import airflow_env
from tests.fixtures.airflow_env import write_config, write_lines
from tests.fixtures.dag_jobs import TEXTS

airflow_env.activate()  # before anything imports airflow


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
