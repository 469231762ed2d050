"""Shared wiring of the hub-embed DAGs: defaults, config discovery, the embedding job's tasks, Asset names.

DAG files (`dags/*.py`) are declarations; everything they share lives here,
once, imported as `from pipelines import dag_helpers`. It lives in the installed
package rather than beside the DAG files so that it imports the same way in
every process that parses or runs them: the dag-processor (which puts the
bundle folder on `sys.path`), `airflow dags test`, a task on a worker, and a
plain `DagBag(dag_folder)` integrity test (which puts nothing on `sys.path`);
and under a name no other DAG folder, plugin or package can shadow, unlike a
top-level `common`. This module imports Airflow, PyYAML and `pipelines.embedding.config`
(stdlib + PyYAML) only: TensorFlow and Beam are imported by the task callables
(in `pipelines.*`) when a task runs, never while a DAG file is parsed.

The project root (`configs/`, `build/modules/`, and what relative paths in
configs are relative to) is `$HUB_EMBED_PROJECT_ROOT`, else the checkout this
package is installed from in development mode (`pip install -e .`).

Config discovery: every `*.yaml` / `*.yml` in the configs folder (env
`HUB_EMBED_CONFIGS_DIR`, default `<project>/configs`) that has a `schedule:`
section is a scheduled embedding job. The section is Airflow-only metadata;
`pipelines.embedding.config` never sees it:

    schedule:
      cron: "@daily"            # an Airflow schedule; null = manual/asset runs only
      runner: DirectRunner      # or DataflowRunner (default: beam.runner, else DirectRunner)
      module_name: my-encoder   # module this job embeds with (default: from the module handle)
      start_date: 2024-01-01    # first logical date (default 2024-01-01, no catch-up)
      dataflow:                 # DataflowRunner only
        project: my-project     # -> dataflow_config.project_id
        region: europe-west1    # -> dataflow_config.location
        temp_location: gs://my-bucket/tmp   # anything not a DataflowConfiguration field is a Beam option
        gcp_conn_id: google_cloud_default
    # project, region and temp_location may instead be Beam options under `beam:`.

The rest of the file is the job: its keys are passed to `python -m
pipelines.embed` as flags (same names), its `beam:` mapping as Beam options.
`output` is the base directory: a scheduled run writes its own table to
`<output>/<run stamp>`, a re-embedding to `<output>/<module>-v<version>/<run stamp>`,
so runs never touch each other's tables. Relative local paths (input, output,
module, Beam file options) are relative to the project root.

Incremental runs: a run passes the previous committed run of its folder as
`--reuse` (`previous_table`): a scheduled run the newest committed
`<output>/<stamp>` before its own stamp, a re-embedding the newest committed
`<output>/<module>-v<version>/<stamp>` before its own. The pipeline takes that
table's vectors for unchanged content and refuses (embedding everything) when
the table was written with another module fingerprint, signature or
preprocessing; since re-embeddings never look outside their own version's
folder, they never even offer a table of another module version.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import os
import posixpath
import re
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Any

import yaml
from airflow.providers.apache.beam.operators import beam as beam_operators
from airflow.sdk import Asset, AssetAlias, TaskGroup, get_current_context, task

from pipelines.embedding.config import BEAM_PATH_OPTIONS, DEFAULT_MODULE  # stdlib + PyYAML only: cheap at parse time

PROJECT_ROOT_ENV = "HUB_EMBED_PROJECT_ROOT"
PROJECT_ROOT = os.environ.get(PROJECT_ROOT_ENV) or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
CONFIGS_DIR_ENV = "HUB_EMBED_CONFIGS_DIR"
MODULES_ROOT_ENV = "HUB_EMBED_MODULES_ROOT"
PYTHON_ENV = "HUB_EMBED_PYTHON"
RETRIES_ENV = "HUB_EMBED_RETRIES"

OWNER = "hub-embed"
TAGS = ["hub-embed"]
DEFAULT_RETRIES = 2
RETRY_DELAY = datetime.timedelta(minutes=5)
DEFAULT_START_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

EMBED_DAG_PREFIX = "embed__"
MODULE_ASSET_SCHEME = "hub-module"
TABLE_ASSET_SCHEME = "hub-embed-table"
MODULE_RELEASES = AssetAlias("hub-module-releases")
"""Alias the fine-tune DAG's publish task emits module Asset events through (the name is only known at run time)."""

RUNNERS = ("DirectRunner", "DataflowRunner")
SCHEDULE_KEYS = ("cron", "runner", "module_name", "start_date", "dataflow")
# Fields of airflow.providers.google.cloud.operators.dataflow.DataflowConfiguration.
_DATAFLOW_CONFIG_FIELDS = (
    "job_name",
    "append_job_name",
    "project_id",
    "location",
    "gcp_conn_id",
    "poll_sleep",
    "impersonation_chain",
    "drain_pipeline",
    "cancel_timeout",
    "wait_until_finished",
    "multiple_jobs",
    "check_if_running",
    "service_account",
)
_DATAFLOW_ALIASES = {"project": "project_id", "region": "location"}
_DATAFLOW_REQUIRED = ("project_id", "location", "temp_location")
_LOCAL_PATH_KEYS = ("input", "output", "module")
_RUN_KEYS = ("module", "output", "overwrite", "reuse")  # set per run by `pipeline_options`
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STAMP_RE = re.compile(r"^\d{8}T\d{6}(-\d{6})?$")  # what `run_stamp` writes
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class ConfigDiscoveryError(ValueError):
    """A scheduled config that cannot become a DAG; the message names the file."""


# --------------------------------------------------------------------------- names and paths


def module_asset(name: str) -> Asset:
    """The Asset of a published module: `hub-module://<name>`."""
    return Asset(uri=f"{MODULE_ASSET_SCHEME}://{name}")


def module_name_of_asset(asset: Asset) -> str:
    """`hub-module://<name>` -> `<name>`."""
    return urllib.parse.urlsplit(asset.uri).netloc


def table_asset(job: ScheduledJob) -> Asset:
    """The Asset of a job's tables: named `hub-embed-table://<config>`, its URI the output base."""
    base = job.output_base
    uri = base if urllib.parse.urlsplit(base).scheme else "file://" + base
    return Asset(name=f"{TABLE_ASSET_SCHEME}://{job.name}", uri=uri)


def configs_dir() -> str:
    """The folder scanned for job configs: `$HUB_EMBED_CONFIGS_DIR`, else `<project>/configs`."""
    return os.environ.get(CONFIGS_DIR_ENV) or os.path.join(PROJECT_ROOT, "configs")


def modules_root() -> str:
    """Default modules root of the fine-tune DAG: `$HUB_EMBED_MODULES_ROOT`, else `<project>/build/modules`."""
    return os.environ.get(MODULES_ROOT_ENV) or os.path.join(PROJECT_ROOT, "build", "modules")


def python() -> str:
    """Interpreter that runs the pipelines: `$HUB_EMBED_PYTHON`, else this worker's own."""
    return os.environ.get(PYTHON_ENV) or sys.executable


def absolute(path: str) -> str:
    """Local relative paths are relative to the project root (Airflow workers run anywhere); URLs pass."""
    if urllib.parse.urlsplit(path).scheme or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(PROJECT_ROOT, path))


def _absolute_paths(value: Any) -> Any:
    """`absolute` of a path or of each path in a list."""
    if isinstance(value, list):
        return [_absolute_paths(v) for v in value]
    return absolute(value) if isinstance(value, str) else value


def module_name_of(handle: str) -> str | None:
    """The module name a handle points at: `<...>/<name>/<version|latest>[.tar.gz]`, else None."""
    path = urllib.parse.urlsplit(handle).path.rstrip("/")
    for suffix in _ARCHIVE_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    parts = path.split("/")
    if len(parts) >= 2 and (parts[-1].isdigit() or parts[-1] == "latest") and parts[-2]:
        return parts[-2]
    return None


def join(base: str, *parts: str) -> str:
    """Joins a local path or URL with `/`."""
    return posixpath.join(base.rstrip("/"), *parts)


def run_stamp(dag_run: Any) -> str:
    """`YYYYmmddTHHMMSS[-ffffff]` of the run's logical date, or of `run_after` when it has none (asset-triggered runs).

    Stamps sort as their times do (as strings), which `previous_table` relies on.
    """
    when = getattr(dag_run, "logical_date", None) or dag_run.run_after
    return when.strftime("%Y%m%dT%H%M%S") + (f"-{when.microsecond:06d}" if when.microsecond else "")


def previous_table(folder: str, stamp: str) -> str | None:
    """The newest committed run in `folder` older than the run stamped `stamp`, or None.

    That is `<folder>/<s>` for the greatest run stamp `s < stamp` whose
    directory holds `_SUCCESS`. Entries that are not run stamps (re-embedding
    folders `<module>-v<version>/`, temp files) are ignored, and so is the
    run's own directory (a retry must not reuse itself). Listed through Beam's
    FileSystems, so `folder` may be local, `gs://` or `s3://` (credentials and
    endpoints from the environment); Beam is imported here, at task run time.
    On object stores the listing walks every object under `folder`.

    Args:
      folder: the folder of one job's runs (a config's output base, or one of
        its `<module>-v<version>` folders).
      stamp: this run's `run_stamp`.
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.embedding.sinks import SUCCESS_FILE
    from pipelines.hub.beam_filesystems import ensure_filesystem_options

    ensure_filesystem_options()
    prefix = folder.rstrip("/") + "/"
    matched = FileSystems.match([prefix + "*/" + SUCCESS_FILE])[0].metadata_list
    stamps = []
    for item in matched:
        parts = item.path[len(prefix) :].split("/") if item.path.startswith(prefix) else []
        if len(parts) == 2 and parts[1] == SUCCESS_FILE and _STAMP_RE.match(parts[0]) and parts[0] < stamp:
            stamps.append(parts[0])
    return join(folder, max(stamps)) if stamps else None


def scheduled_plan(output_base: str, module: str, stamp: str) -> dict[str, str | None]:
    """A scheduled run's plan: its module, its table `<output>/<stamp>`, and the previous committed run to reuse."""
    return {"module": module, "output": join(output_base, stamp), "reuse": previous_table(output_base, stamp)}


def reembed_plan(update: Mapping[str, Any], module_name: str, output_base: str, stamp: str) -> dict[str, str | None]:
    """A re-embedding's plan: the updated module, `<output>/<module>-v<version>/<stamp>`, and what it may reuse.

    Only an earlier committed run of the same `<module>-v<version>` folder is
    offered for reuse, never a scheduled run or another version's table.
    """
    folder = join(output_base, f"{module_name}-v{update['version']}")
    return {"module": update["handle"], "output": join(folder, stamp), "reuse": previous_table(folder, stamp)}


# --------------------------------------------------------------------------- discovery


@dataclasses.dataclass(frozen=True)
class ScheduledJob:
    """One `configs/*.yaml` with a `schedule:` section.

    Attributes:
      name: the file name without extension; the DAG is `embed__<name>`.
      path: the YAML file.
      values: its job keys (everything but `schedule` and `beam`), local paths made absolute.
      beam: its `beam:` Beam options, without `runner`.
      cron: Airflow schedule, or None.
      runner: "DirectRunner" or "DataflowRunner".
      module_name: name of the module it embeds with, if known.
      start_date: first logical date.
      dataflow_config: `DataflowConfiguration` fields (DataflowRunner).
      dataflow_options: further Beam options from `schedule.dataflow` (e.g. temp_location).
    """

    name: str
    path: str
    values: Mapping[str, Any]
    beam: Mapping[str, Any]
    cron: str | None
    runner: str
    module_name: str | None
    start_date: datetime.datetime
    dataflow_config: Mapping[str, Any]
    dataflow_options: Mapping[str, Any]

    @property
    def dag_id(self) -> str:
        return f"{EMBED_DAG_PREFIX}{self.name}"

    @property
    def output_base(self) -> str:
        return self.values["output"]

    @property
    def module(self) -> str:
        """The config's module handle (the pipeline's default module when it names none)."""
        return self.values.get("module") or absolute(DEFAULT_MODULE)

    def pipeline_options(self, module: str, output: str, reuse: str) -> dict[str, Any]:
        """The `pipelines.embed` flags for one run (operator `pipeline_options`; may hold templates).

        `output` is the run's own directory, so `overwrite` is set: it only lets a
        retry of the same run replace what that run committed. `reuse` renders
        to the table to reuse, or to '' (then `EmbedPipelineOperator` leaves the
        flag out).
        """
        options: dict[str, Any] = {**self.beam, **self.dataflow_options}
        for key, value in self.values.items():
            if key not in _RUN_KEYS:
                options.update(_flag(key, value))
        options.update(module=module, output=output, overwrite=True, reuse=reuse)
        return options


def _flag(key: str, value: Any) -> dict[str, Any]:
    """A YAML job key as the flag `pipelines.embedding.config` parses (lists comma-joined, false as `--no-KEY`)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {key: True} if value else {f"no-{key.replace('_', '-')}": True}
    if isinstance(value, (list, tuple)):
        return {key: ",".join(str(v) for v in value)}
    return {key: str(value)}


def discover(folder: str | None = None) -> list[ScheduledJob]:
    """Reads every config with a `schedule:` section, sorted by name.

    Raises:
      ConfigDiscoveryError: a scheduled config is malformed (the DAG file then
        shows an import error naming the file).
    """
    folder = folder or configs_dir()
    paths = sorted(glob.glob(os.path.join(folder, "*.yaml")) + glob.glob(os.path.join(folder, "*.yml")))
    jobs = [job for job in map(_read_job, paths) if job is not None]
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigDiscoveryError(f"Configs in {folder} share names {duplicates} (.yaml and .yml of one job?).")
    return jobs


def _read_job(path: str) -> ScheduledJob | None:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigDiscoveryError(f"{path}: cannot be read as YAML: {e}") from None
    if not isinstance(data, dict) or "schedule" not in data:
        return None
    name = os.path.splitext(os.path.basename(path))[0]
    if not _NAME_RE.match(name):
        raise ConfigDiscoveryError(
            f"{path}: the file name must be letters, digits, '.', '_' or '-' (it names the DAG)."
        )
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    schedule = data.pop("schedule") or {}
    beam = dict(data.pop("beam", None) or {})
    if not isinstance(schedule, dict):
        raise ConfigDiscoveryError(f"{path}: 'schedule' must be a mapping with keys {', '.join(SCHEDULE_KEYS)}.")
    unknown = sorted(set(schedule) - set(SCHEDULE_KEYS))
    if unknown:
        raise ConfigDiscoveryError(f"{path}: unknown schedule keys {unknown}; valid: {', '.join(SCHEDULE_KEYS)}.")
    if not data.get("output"):
        raise ConfigDiscoveryError(f"{path}: a scheduled config needs 'output', the base directory of its tables.")
    if data.get("reuse") is not None:
        raise ConfigDiscoveryError(
            f"{path}: a scheduled config cannot set 'reuse'; each run reuses the previous committed run of its folder."
        )
    values = {k: (absolute(v) if k in _LOCAL_PATH_KEYS and isinstance(v, str) else v) for k, v in data.items()}
    runner = schedule.get("runner") or beam.get("runner") or "DirectRunner"
    beam.pop("runner", None)
    if runner not in RUNNERS:
        raise ConfigDiscoveryError(f"{path}: schedule.runner must be one of {', '.join(RUNNERS)}, got {runner!r}.")
    beam = {k: (_absolute_paths(v) if k in BEAM_PATH_OPTIONS else v) for k, v in beam.items()}
    config, options = _split_dataflow(path, runner, schedule.get("dataflow") or {}, beam, name)
    module = values.get("module") or absolute(DEFAULT_MODULE)
    return ScheduledJob(
        name=name,
        path=path,
        values=values,
        beam=beam,
        cron=schedule.get("cron"),
        runner=runner,
        module_name=schedule.get("module_name") or module_name_of(module),
        start_date=_start_date(path, schedule.get("start_date")),
        dataflow_config=config,
        dataflow_options=options,
    )


def _split_dataflow(
    path: str, runner: str, section: Any, beam: Mapping[str, Any], name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`schedule.dataflow` -> (DataflowConfiguration fields, Beam options); project/region may also come from `beam:`."""
    if not isinstance(section, dict):
        raise ConfigDiscoveryError(f"{path}: schedule.dataflow must be a mapping.")
    if runner != "DataflowRunner":
        if section:
            raise ConfigDiscoveryError(f"{path}: schedule.dataflow is set but the runner is {runner}.")
        return {}, {}
    config: dict[str, Any] = {"job_name": re.sub(r"[^a-z0-9-]+", "-", f"embed-{name}".lower()).strip("-")}
    options: dict[str, Any] = {}
    for key, value in section.items():
        key = _DATAFLOW_ALIASES.get(key, key)
        (config if key in _DATAFLOW_CONFIG_FIELDS else options)[key] = value
    for beam_key, field in (("project", "project_id"), ("region", "location")):
        if beam.get(beam_key):
            config.setdefault(field, beam[beam_key])
    missing = [k for k in _DATAFLOW_REQUIRED if not {**beam, **config, **options}.get(k)]
    if missing:
        raise ConfigDiscoveryError(
            f"{path}: DataflowRunner needs {missing}: set project, region and temp_location in schedule.dataflow (or beam)."
        )
    return config, options


def _start_date(path: str, value: Any) -> datetime.datetime:
    if value is None:
        return DEFAULT_START_DATE
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)
    raise ConfigDiscoveryError(f"{path}: schedule.start_date must be a date (YYYY-MM-DD), got {value!r}.")


# --------------------------------------------------------------------------- operator


class _GoogleProviderCheckedAtRun(beam_operators.BeamDataflowMixin):
    """Sits before `BeamDataflowMixin` in the MRO and skips its constructor's Google-provider check."""

    def __init__(self) -> None:
        pass


class EmbedPipelineOperator(beam_operators.BeamRunPythonPipelineOperator, _GoogleProviderCheckedAtRun):
    """`BeamRunPythonPipelineOperator` that runs DirectRunner pipelines without the Google provider, minus empty run options.

    apache-airflow-providers-apache-beam 6.3.1 needs apache-airflow-providers-google
    even for DirectRunner under Airflow 3: `BeamDataflowMixin.__init__` raises
    when it is missing (the task SDK's `DAGNode` now calls `super().__init__()`),
    and `execute` builds a `DataflowConfiguration` whatever the runner. This
    subclass defers the check to DataflowRunner runs and skips the Dataflow
    configuration for other runners; with the Google provider installed it
    behaves exactly like its parent.

    It also leaves out the per-run options in `OPTIONAL_OPTIONS` whose template
    rendered to '' (a Jinja template always renders to a string, so "no reuse
    table" cannot reach the pipeline as an absent flag otherwise, and
    `--reuse=` or `--reuse=None` would be an error or a missing table).
    """

    OPTIONAL_OPTIONS = ("reuse",)

    def _is_dataflow(self) -> bool:
        return self.runner.lower() == "dataflowrunner"

    def _cast_dataflow_config(self) -> None:
        if self._is_dataflow() or beam_operators.GOOGLE_PROVIDER:
            super()._cast_dataflow_config()

    def execute(self, context: Any) -> Any:
        if self._is_dataflow() and not beam_operators.GOOGLE_PROVIDER:
            raise beam_operators.AirflowOptionalProviderFeatureException(
                "DataflowRunner needs apache-airflow-providers-google on the Airflow workers."
            )
        for key in self.OPTIONAL_OPTIONS:
            if self.pipeline_options.get(key) == "":
                del self.pipeline_options[key]
        return super().execute(context)


# --------------------------------------------------------------------------- tasks


@task
def plan_output(output_base: str, module: str) -> dict[str, str | None]:
    """This run's `scheduled_plan`: `<output>/<run stamp>`, the config's module, the previous committed run as reuse."""
    return scheduled_plan(output_base, module, run_stamp(get_current_context()["dag_run"]))


@task.short_circuit
def plan_reembed(updates: Mapping[str, Mapping[str, Any]], module_name: str, output_base: str) -> dict[str, str | None]:
    """This run's `reembed_plan` (`<output>/<module>-v<version>/<run stamp>`); skips the job when its module did not change."""
    update = updates.get(module_name)
    if not update:
        return {}
    return reembed_plan(update, module_name, output_base, run_stamp(get_current_context()["dag_run"]))


@task
def module_updates() -> dict[str, dict[str, Any]]:
    """The newest version per module from the triggering module Asset events (or from the run's conf).

    A manual run may pass `{"name": ..., "version": ..., "handle": ...}` as conf
    to re-embed with that module version.
    """
    context = get_current_context()
    updates: dict[str, dict[str, Any]] = {}
    extras = []
    for asset, events in context["triggering_asset_events"].items():
        if isinstance(asset, Asset) and asset.uri.startswith(f"{MODULE_ASSET_SCHEME}://"):
            extras += [{"name": module_name_of_asset(asset), **event.extra} for event in events]
    conf = context["dag_run"].conf or {}
    if conf.get("name"):
        extras.append(dict(conf))
    for extra in extras:
        if not extra.get("handle") or extra.get("version") is None:
            raise ValueError(f"Module event {extra} lacks a handle or version.")
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
    Manifests written before incremental runs lack the new counts: every row
    written was embedded there.
    """
    from pipelines.embedding import sinks

    manifest = sinks.read_manifest(plan["output"])
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
    }
    context = get_current_context()
    for asset in context["task"].outlets:
        context["outlet_events"][asset].extra = extra
    return extra


def embed_job(job: ScheduledJob, plan: Any) -> None:
    """Adds `embed` (the Beam pipeline, `python -m pipelines.embed`) and `record_table` after a plan task.

    Args:
      job: the scheduled config.
      plan: the plan task's output, `{"module": ..., "output": ..., "reuse": ...}` (an XComArg).
    """
    plan_id = plan.operator.task_id
    pulled = "{{{{ ti.xcom_pull(task_ids='{}')['{}'] }}}}"
    reuse = f"{{{{ ti.xcom_pull(task_ids='{plan_id}')['reuse'] or '' }}}}"
    embed = EmbedPipelineOperator(
        task_id="embed",
        py_file="pipelines.embed",
        py_options=["-m"],
        py_interpreter=python(),
        runner=job.runner,
        pipeline_options=job.pipeline_options(
            pulled.format(plan_id, "module"), pulled.format(plan_id, "output"), reuse
        ),
        dataflow_config=dict(job.dataflow_config) or None,
        gcp_conn_id=job.dataflow_config.get("gcp_conn_id", "google_cloud_default"),
    )
    plan >> embed >> record_table.override(outlets=[table_asset(job)])(plan)


def scheduled_embedding(job: ScheduledJob) -> None:
    """The tasks of `embed__<config>`: plan_output (with the previous committed run as reuse) -> embed -> record_table."""
    embed_job(job, plan_output.override(task_id="plan")(job.output_base, job.module))


def reembedding(job: ScheduledJob, updates: Any) -> None:
    """A task group re-running one job with an updated module: plan_reembed -> embed -> record_table."""
    with TaskGroup(group_id=job.name):
        embed_job(job, plan_reembed.override(task_id="plan")(updates, job.module_name, job.output_base))


def default_args() -> dict[str, Any]:
    """owner, retries (`$HUB_EMBED_RETRIES`, default 2) and retry_delay of every task."""
    return {"owner": OWNER, "retries": int(os.environ.get(RETRIES_ENV, DEFAULT_RETRIES)), "retry_delay": RETRY_DELAY}


def dag_kwargs(**overrides: Any) -> dict[str, Any]:
    """Arguments every hub-embed DAG shares (default_args set once, here)."""
    return {"default_args": default_args(), "catchup": False, "tags": TAGS, "max_active_runs": 1, **overrides}
