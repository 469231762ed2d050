"""Scheduled embedding jobs: one DAG `embed__<config>` per `configs/*.yaml` with a `schedule:` section.

Each run: `plan` (this run's output directory, and the previous committed
run to reuse) -> `embed` (`python -m pipelines.embed [--reuse <previous>]`
through the Beam provider, DirectRunner or DataflowRunner) -> `record_table`
(Asset event of the table with the manifest's counts).
"""

from __future__ import annotations

from airflow.sdk import DAG

from pipelines.orchestration import defaults, discovery, embedding_tasks

for job in discovery.discover():
    with DAG(
        dag_id=job.dag_id,
        schedule=job.cron,
        start_date=job.start_date,
        description=f"Embed with {job.path} ({job.runner})",
        **defaults.dag_kwargs(),
    ):
        embedding_tasks.scheduled_embedding(job)
