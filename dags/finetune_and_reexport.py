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

from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.orchestration import dag_helpers

PARAMS = {
    "module": Param(type="string", minLength=1, description="Handle of the parent module to fine-tune"),
    "data": Param(type="string", minLength=1, description="Labeled data: text .jsonl/.csv (text,label) or images"),
    "name": Param(None, type=["null", "string"], description="Module name to publish under (default: the parent's)"),
    "output_root": Param(dag_helpers.modules_root(), type="string", description="Modules root (local)"),
    "task": Param("classification", enum=["classification"]),
    "steps": Param(None, type=["null", "integer"], minimum=1, description="Optimizer steps (default: epochs)"),
    "epochs": Param(None, type=["null", "integer"], minimum=1),
    "seed": Param(0, type="integer"),
    "probe_data": Param(None, type=["null", "string"], description="Labeled probe set (default: data)"),
    "tolerance": Param(0.02, type="number", minimum=0, description="Allowed drop of the probe accuracy"),
    "upload_root": Param(None, type=["null", "string"], description="gs:// or s3:// folder to upload the .tar.gz to"),
}


_PATH_PARAMS = ("module", "data", "output_root", "probe_data")


def _params() -> dict[str, Any]:
    """The run's params, relative local paths made relative to the project root."""
    params = dict(get_current_context()["params"])
    return {k: dag_helpers.absolute(v) if k in _PATH_PARAMS and v else v for k, v in params.items()}


@task
def finetune() -> str:
    """Fine-tunes and exports the next version; returns its directory."""
    from pipelines.finetune import module_release

    p = _params()
    cmd = module_release.finetune_command(
        p["module"],
        p["data"],
        p["output_root"],
        name=p["name"],
        task=p["task"],
        steps=p["steps"],
        epochs=p["epochs"],
        seed=p["seed"],
        python=dag_helpers.python(),
    )
    return module_release.run_finetune(cmd)


@task
def validate(path: str) -> dict[str, Any]:
    """Validates the new version against its parent; on failure moves it aside and fails for good."""
    from pipelines.finetune import module_release

    p = _params()
    try:
        return module_release.validate(
            path, parent=p["module"], probe_data=p["probe_data"] or p["data"], tolerance=p["tolerance"], seed=p["seed"]
        )
    except module_release.ValidationError as e:
        rejected = module_release.reject(path)
        raise AirflowFailException(f"Validation failed, nothing published (version moved to {rejected}): {e}") from e


@task(outlets=[dag_helpers.MODULE_RELEASES])
def publish(report: dict[str, Any]) -> dict[str, Any]:
    """Publishes the validated version and emits its `hub-module://<name>` Asset event."""
    from pipelines.finetune import module_release

    context = get_current_context()
    extra = module_release.publish(report["path"], upload_root=context["params"]["upload_root"])
    context["outlet_events"][dag_helpers.MODULE_RELEASES].add(dag_helpers.module_asset(extra["name"]), extra=extra)
    return extra


with DAG(
    dag_id="finetune_and_reexport",
    schedule=None,
    start_date=dag_helpers.DEFAULT_START_DATE,
    params=PARAMS,
    description="Fine-tune a module, validate the new version against its parent, publish it",
    **dag_helpers.dag_kwargs(),
):
    publish(validate(finetune()))
