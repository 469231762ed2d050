"""Fine-tune a module, validate the exported version against its parent, publish it.

`finetune` (`python -m pipelines.finetune`, which exports the next version
`<output_root>/<name>/<version>/`) -> `validate` (loads; signatures and
output dims match the parent's; finite outputs; probe metric not worse than
the parent's beyond `tolerance`) -> `publish` (optional upload of the
`.tar.gz`, then the `latest` pointer) with a `hub-module://<name>` Asset event,
extra {name, version, fingerprint, handle}.

A failed validation fails the run without retries, moves the version aside
and publishes nothing. Trigger by hand, e.g.
`airflow dags trigger finetune_and_reexport --conf '{"module": "...", "data": "..."}'`.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from pipelines.orchestration import defaults, project
from pipelines.orchestration.release_tasks import finetune, publish, validate

PARAMS = {
    "module": Param(type="string", minLength=1, description="Handle of the parent module to fine-tune"),
    "data": Param(type="string", minLength=1, description="Labeled data: text .jsonl/.csv (text,label) or images"),
    "name": Param(None, type=["null", "string"], description="Module name to publish under (default: the parent's)"),
    "output_root": Param(project.modules_root(), type="string", description="Modules root (local)"),
    "task": Param("classification", enum=["classification"]),
    "steps": Param(None, type=["null", "integer"], minimum=1, description="Optimizer steps (default: epochs)"),
    "epochs": Param(None, type=["null", "integer"], minimum=1),
    "seed": Param(0, type="integer"),
    "probe_data": Param(None, type=["null", "string"], description="Labeled probe set (default: data)"),
    "tolerance": Param(0.02, type="number", minimum=0, description="Allowed drop of the probe accuracy"),
    "upload_root": Param(None, type=["null", "string"], description="gs:// or s3:// folder to upload the .tar.gz to"),
}

with DAG(
    dag_id="finetune_and_reexport",
    schedule=None,
    start_date=defaults.DEFAULT_START_DATE,
    params=PARAMS,
    description="Fine-tune a module, validate the new version against its parent, publish it",
    **defaults.dag_kwargs(),
):
    publish(validate(finetune()))
