"""The tasks of the fine-tune DAG: fine-tune a module, validate the new version against its parent, publish it."""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.embedding.paths import absolute
from pipelines.hub.redaction import redact
from pipelines.orchestration import assets, credentials, project

PATH_PARAMS = ("module", "data", "output_root", "probe_data")
"""DAG params that name local files: relative ones are taken from the project root."""


def _params() -> dict[str, Any]:
    """The run's params, relative local paths made relative to the project root.

    Raises:
      AirflowFailException: a param holds credentials (`user:password@` or
        query parameters in a URL), which the fine-tuning command and the task
        logs would carry.
    """
    params = dict(get_current_context()["params"])
    for key, value, found in credentials.find_secrets(params):
        raise AirflowFailException(
            f"Param {key} holds {' and '.join(found)} in {redact(value)!r}; they would reach the task logs. "
            "Fine-tune a module the workers can read without them (a local copy, gs:// or s3://)."
        )
    return {k: absolute(v, project.PROJECT_ROOT) if k in PATH_PARAMS and v else v for k, v in params.items()}


# Each task imports `pipelines.finetune.release` (Beam, and TensorFlow when it validates) when it runs,
# never while a DAG file is parsed.


@task
def finetune() -> str:
    """Fine-tunes and exports the next version (`python -m pipelines.finetune`); returns its directory."""
    from pipelines.finetune import release

    p = _params()
    cmd = release.finetune_command(
        p["module"],
        p["data"],
        p["output_root"],
        name=p["name"],
        task=p["task"],
        steps=p["steps"],
        epochs=p["epochs"],
        seed=p["seed"],
        python=project.python(),
    )
    return release.run_finetune(cmd)


@task
def validate(path: str) -> dict[str, Any]:
    """Validates the new version against its parent; on failure moves it aside and fails for good."""
    from pipelines.finetune import release

    p = _params()
    try:
        return release.validate(
            path, parent=p["module"], probe_data=p["probe_data"] or p["data"], tolerance=p["tolerance"], seed=p["seed"]
        )
    except release.ValidationError as e:
        rejected = release.reject(path)
        raise AirflowFailException(f"Validation failed, nothing published (version moved to {rejected}): {e}") from e


@task(outlets=[assets.MODULE_RELEASES])
def publish(report: dict[str, Any]) -> dict[str, Any]:
    """Publishes the validated version and emits its `hub-module://<name>` Asset event."""
    from pipelines.finetune import release

    context = get_current_context()
    extra = release.publish(report["path"], upload_root=context["params"]["upload_root"])
    context["outlet_events"][assets.MODULE_RELEASES].add(assets.module_asset(extra["name"]), extra=extra)
    return extra
