"""The tasks of the embedding DAGs: plan a run, embed (the Beam pipeline), record the table's Asset event, publish."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import TaskGroup, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.hub.redaction import redact
from pipelines.orchestration import assets, credentials, plans, project
from pipelines.orchestration.discovery import ScheduledJob
from pipelines.orchestration.operators import EmbedPipelineOperator
from pipelines.orchestration.publish_tasks import publish

_LOG = logging.getLogger(__name__)


@task
def plan_output(output_base: str, module: str | None) -> dict[str, str | None]:
    """This run's `scheduled_plan`: `<output>/<run stamp>`, the config's module, the previous committed run as reuse.

    The module is None when the job reads its handle from the workers' environment (`module_from_env`).
    """
    return plans.scheduled_plan(output_base, module, plans.run_stamp(get_current_context()["dag_run"]))


@task.short_circuit
def plan_reembed(
    updates: Mapping[str, Mapping[str, Any]], module_name: str | None, output_base: str
) -> dict[str, str | None]:
    """This run's `reembed_plan` (`<output>/<module>-v<version>/<run stamp>`); skips the job when its module did not change.

    The plan's `previous` is the job's newest table of an earlier module version (None if it has none): the
    embed task's report compares the new table with it.
    """
    if not module_name or not updates.get(module_name):
        return {}
    return plans.reembed_plan(
        updates[module_name], module_name, output_base, plans.run_stamp(get_current_context()["dag_run"])
    )


@task
def module_updates() -> dict[str, dict[str, Any]]:
    """The newest version per module from the triggering module Asset events (or from the run's conf).

    A manual run may pass `{"name": ..., "version": ..., "handle": ...}` as conf
    to re-embed with that module version. A handle with credentials is refused
    (they would be stored as this task's XCom): the jobs' `module_conn_id`
    supplies them.
    """
    context = get_current_context()
    updates: dict[str, dict[str, Any]] = {}
    extras = []
    for asset, events in context["triggering_asset_events"].items():
        if assets.is_module_asset(asset):
            extras += [{"name": assets.module_name_of_asset(asset), **event.extra} for event in events]
    conf = context["dag_run"].conf or {}
    if conf.get("name"):
        extras.append(dict(conf))
    for extra in extras:
        if not extra.get("handle") or extra.get("version") is None:
            raise ValueError(f"Module event {extra} lacks a handle or version.")
        if credentials.secrets_in(str(extra["handle"])):
            raise AirflowFailException(
                f"Module event of {extra.get('name')!r} has a handle with credentials ({redact(str(extra['handle']))!r}); "
                "publish credential-free handles: a job's schedule.module_conn_id supplies its credentials."
            )
        known = updates.get(extra["name"])
        if known is None or int(extra["version"]) >= int(known["version"]):
            updates[extra["name"]] = {k: extra.get(k) for k in ("name", "version", "fingerprint", "handle")}
    return updates


@task
def record_table(plan: Mapping[str, str]) -> dict[str, Any]:
    """Reads the committed table's manifest and attaches its counts to the table Asset event.

    `rows_embedded` counts the vectors this run computed, `rows_reused` those it
    took from `reused_from` ({"table", "run_id"} of the reused table, None when
    nothing was reused; `reuse_refused` then says why, if a table was offered).
    A manifest without `rows_written` or `rows_reused` counts every written row
    as embedded. `report` is the table's HTML report (`<table>/_report.html`),
    None when the run wrote none; the task's log says it too.
    """
    # The sink brings Beam and PyArrow, the report's module Plotly: imported when the task runs, never while a
    # DAG file is parsed.
    from apache_beam.io.filesystems import FileSystems

    from pipelines.embedding import sinks
    from pipelines.report.build import report_path

    manifest = sinks.read_table_manifest(plan["output"])
    if manifest is None:
        raise RuntimeError(f"{plan['output']} has no committed table (no _SUCCESS manifest).")
    counts, table = manifest["counts"], manifest["table"]
    reuse = manifest.get("reuse") or {}
    extra = {
        "path": plan["output"],
        "rows_in": counts["rows_in"],
        "rows_written": counts.get("rows_written", counts["rows_embedded"]),
        "rows_embedded": counts["rows_embedded"],
        "rows_reused": counts.get("rows_reused", 0),
        "rows_failed": counts["rows_failed"],
        "reused_from": {"table": reuse.get("table"), "run_id": reuse.get("run_id")} if reuse.get("used") else None,
        "reuse_refused": reuse.get("reason") if reuse and not reuse.get("used") else None,
        "files": len(manifest["files"]),
        "module": table.get("module"),
        "module_name": table.get("module_name"),
        "module_version": table.get("module_version"),
        "fingerprint": table.get("fingerprint"),
        "run_id": manifest.get("run_id"),
        "report": report if FileSystems.exists(report := report_path(plan["output"])) else None,
    }
    _LOG.info("report: %s", extra["report"] or "none written")
    context = get_current_context()
    for asset in context["task"].outlets:
        context["outlet_events"][asset].extra = extra
    return extra


def embed_job(job: ScheduledJob, plan: Any, replace: bool = False, compare: bool = False) -> None:
    """Adds `embed` (the Beam pipeline, `python -m pipelines.embed`), `record_table` and `publish` after a plan task.

    `publish` is there when the job has a `publish:` section; it loads the committed table into the
    section's collection after `embed`.

    The plan's module is a credential-free handle (or None with
    `module_from_env`); the operator adds the credentials of the job's
    `module_conn_id` out of band, when it runs.

    Args:
      job: the scheduled config.
      plan: the plan task's output, `{"module": ..., "output": ..., "reuse": ...}` (an XComArg).
      replace: publish with `replace` (the collection built anew and swapped in), whatever the section says.
      compare: the plan names a `previous` table; the report compares the new table with it
        (`--report-compare`), when there is one.
    """
    plan_id = plan.operator.task_id
    pulled = "{{{{ ti.xcom_pull(task_ids='{}')['{}'] }}}}"
    module = f"{{{{ ti.xcom_pull(task_ids='{plan_id}')['module'] or '' }}}}"
    reuse = f"{{{{ ti.xcom_pull(task_ids='{plan_id}')['reuse'] or '' }}}}"
    options = job.pipeline_options(module, pulled.format(plan_id, "output"), reuse)
    if compare:
        options["report_compare"] = f"{{{{ ti.xcom_pull(task_ids='{plan_id}')['previous'] or '' }}}}"
    embed = EmbedPipelineOperator(
        task_id="embed",
        py_file="pipelines.embed",
        py_options=["-m"],
        py_interpreter=project.python(),
        runner=job.runner,
        pipeline_options=options,
        dataflow_config=dict(job.dataflow_config) or None,
        gcp_conn_id=job.dataflow_config.get("gcp_conn_id", "google_cloud_default"),
        module_conn_id=job.module_conn_id,
        module_from_env=job.module_from_env,
    )
    plan >> embed >> record_table.override(outlets=[assets.table_asset(job.name, job.output_base)])(plan)
    if job.publish is not None:
        embed >> publish(plan, dataclasses.asdict(job.publish), replace)


def scheduled_embedding(job: ScheduledJob) -> None:
    """The tasks of `embed__<config>`: plan (with the previous committed run as reuse) -> embed -> record_table."""
    embed_job(job, plan_output.override(task_id="plan")(job.output_base, job.module))


def reembedding(job: ScheduledJob, updates: Any) -> None:
    """A task group re-running one job with an updated module: plan -> embed -> record_table (and publish).

    Its publish replaces the collection: the updated module's vectors are another vector space. Its report
    compares the new table with the job's previous one (the plan's `previous`).

    Args:
      job: a scheduled config; one whose module name is unknown is always skipped.
      updates: the `module_updates` task's output (an XComArg).
    """
    with TaskGroup(group_id=job.name):
        embed_job(
            job,
            plan_reembed.override(task_id="plan")(updates, job.module_name, job.output_base),
            replace=True,
            compare=True,
        )
