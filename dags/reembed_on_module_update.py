"""Re-embed with a new module version: runs when a `hub-module://<name>` Asset gets an event.

`module_updates` reads the newest version per module from the triggering
events; each scheduled config that embeds with an updated module re-runs
(`<config>.plan` -> `<config>.embed` -> `<config>.record_table`) with the
event's handle, into `<output>/<module>-v<version>/<run stamp>`, reusing only
an earlier committed run of that same folder. The new table's report
compares it with the job's newest table of an earlier module version. Configs
of other modules are skipped; earlier tables are never touched.
"""

from __future__ import annotations

from airflow.sdk import DAG, AssetAny

from pipelines.orchestration import assets, defaults, discovery, embedding_tasks

jobs = [job for job in discovery.discover() if job.module_name]
module_names = sorted({job.module_name for job in jobs})

with DAG(
    dag_id="reembed_on_module_update",
    schedule=AssetAny(*map(assets.module_asset, module_names)) if module_names else None,
    start_date=defaults.DEFAULT_START_DATE,
    description="Re-run the embedding jobs of a module when a new version of it is published",
    **defaults.dag_kwargs(),
):
    updates = embedding_tasks.module_updates()
    for job in jobs:
        embedding_tasks.reembedding(job, updates)
