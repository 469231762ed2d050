"""Config discovery: every job config with a `schedule:` section becomes a `ScheduledJob`, one DAG each."""

from __future__ import annotations

import dataclasses
import datetime
import glob
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import yaml

from pipelines.embedding import job_yaml
from pipelines.embedding.config import DEFAULT_MODULE  # stdlib + PyYAML only: cheap at parse time
from pipelines.embedding.config_errors import ConfigError
from pipelines.embedding.paths import BEAM_PATH_OPTIONS, absolute
from pipelines.embedding.publish_section import PublishSection, publish_section
from pipelines.hub.redaction import redact
from pipelines.orchestration.credentials import HTTP_SCHEMES, SECRET_BEAM_OPTIONS, find_secrets
from pipelines.orchestration.defaults import DEFAULT_START_DATE
from pipelines.orchestration.project import PROJECT_ROOT, configs_dir

EMBED_DAG_PREFIX = "embed__"
RUNNERS = ("DirectRunner", "DataflowRunner")
SCHEDULE_KEYS = ("cron", "runner", "module_name", "start_date", "dataflow", "module_conn_id")
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
# Set per run: by `pipeline_options` (module, output, overwrite, reuse) or by `EmbedPipelineOperator` (module_from_env).
_RUN_KEYS = ("module", "output", "overwrite", "reuse", "module_from_env")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEAK = "credentials in a scheduled config would reach Airflow's XComs, rendered templates and task logs"
_MODULE_CREDENTIALS = (
    "Keep the handle free of them and name an Airflow connection holding them in schedule.module_conn_id, "
    "or put the whole handle in an environment variable of the workers and name it in module_from_env "
    "(see docs/airflow.md)."
)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class ConfigDiscoveryError(ValueError):
    """A scheduled config that cannot become a DAG; the message names the file."""


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
      module_conn_id: the Airflow connection whose credentials the module handle is sent with, if any.
      module_from_env: the variable of the workers' environment that holds the module handle, if any.
      publish: its `publish:` section: the collection the `publish` task loads each committed table into.
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
    module_conn_id: str | None = None
    module_from_env: str | None = None
    publish: PublishSection | None = None

    @property
    def dag_id(self) -> str:
        """`embed__<name>`."""
        return f"{EMBED_DAG_PREFIX}{self.name}"

    @property
    def output_base(self) -> str:
        """The `output` key: the folder each run writes its own table under."""
        return self.values["output"]

    @property
    def module(self) -> str | None:
        """The config's module handle (the pipeline's default module when it names none); None with `module_from_env`."""
        if self.module_from_env:
            return None
        return self.values.get("module") or absolute(DEFAULT_MODULE, PROJECT_ROOT)

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

    Every `*.yaml` / `*.yml` in `folder` that has a `schedule:` section is a
    scheduled embedding job. The section is Airflow-only metadata
    (`pipelines.embedding.config` never reads it); the rest of the file is the
    job, its keys passed to `python -m pipelines.embed` as flags and its
    `beam:` mapping as Beam options:

        schedule:
          cron: "@daily"            # an Airflow schedule; null = manual/asset runs only
          runner: DirectRunner      # or DataflowRunner (default: beam.runner, else DirectRunner)
          module_name: my-encoder   # module this job embeds with (default: from the module handle)
          start_date: 2024-01-01    # first logical date (default 2024-01-01, no catch-up)
          module_conn_id: my_models # an Airflow connection holding the module handle's credentials
          dataflow:                 # DataflowRunner only
            project: my-project     # -> dataflow_config.project_id
            region: europe-west1    # -> dataflow_config.location
            temp_location: gs://my-bucket/tmp   # anything not a DataflowConfiguration field is a Beam option
            gcp_conn_id: google_cloud_default

    `project`, `region` and `temp_location` may instead be Beam options under
    `beam:`. `output` is required (the base folder of the job's tables);
    `reuse` is refused (each run reuses the previous committed run of its
    folder), and so is any value holding credentials (`user:password@` or
    query parameters in a URL, secret Beam options): they come from
    `schedule.module_conn_id` or `module_from_env`. Relative local paths
    (input, output, module, Beam file options) are taken from the project root.

    Args:
      folder: the configs folder (default `project.configs_dir()`).

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
        data = job_yaml.read(path)
    except (OSError, yaml.YAMLError, job_yaml.JobYamlError) as e:
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
    publish = data.pop("publish", None)
    try:  # checked apart from other values: its database is named, never given with a password
        section = publish_section(publish, path) if publish is not None else None
    except ConfigError as e:
        raise ConfigDiscoveryError(str(e)) from None
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
    _refuse_credentials(path, data, beam, schedule)
    module_conn_id, module_from_env = _module_source(path, data, schedule)
    values = {
        k: (absolute(v, PROJECT_ROOT) if k in _LOCAL_PATH_KEYS and isinstance(v, str) else v) for k, v in data.items()
    }
    runner = schedule.get("runner") or beam.get("runner") or "DirectRunner"
    beam.pop("runner", None)
    if runner not in RUNNERS:
        raise ConfigDiscoveryError(f"{path}: schedule.runner must be one of {', '.join(RUNNERS)}, got {runner!r}.")
    beam = {k: (_project_paths(v) if k in BEAM_PATH_OPTIONS else v) for k, v in beam.items()}
    config, options = _split_dataflow(path, runner, schedule.get("dataflow") or {}, beam, name)
    module = None if module_from_env else values.get("module") or absolute(DEFAULT_MODULE, PROJECT_ROOT)
    return ScheduledJob(
        name=name,
        path=path,
        values=values,
        beam=beam,
        cron=schedule.get("cron"),
        runner=runner,
        module_name=schedule.get("module_name") or (module_name_of(module) if module else None),
        start_date=_start_date(path, schedule.get("start_date")),
        dataflow_config=config,
        dataflow_options=options,
        module_conn_id=module_conn_id,
        module_from_env=module_from_env,
        publish=section,
    )


def _refuse_credentials(
    path: str, data: Mapping[str, Any], beam: Mapping[str, Any], schedule: Mapping[str, Any]
) -> None:
    """Refuses a config that holds credentials: a URL with `user:password@` or query parameters, a secret Beam option."""
    for key, value, found in find_secrets({**data, "beam": beam, "schedule": schedule}):
        raise ConfigDiscoveryError(
            f"{path}: {key} holds {' and '.join(found)} in {redact(value)!r}: {_LEAK}. " + _MODULE_CREDENTIALS
        )
    dataflow = schedule.get("dataflow")
    options = {**beam, **(dataflow if isinstance(dataflow, Mapping) else {})}
    for name in SECRET_BEAM_OPTIONS:
        if options.get(name) is not None:
            raise ConfigDiscoveryError(
                f"{path}: Beam option {name} is a credential: {_LEAK}. Leave it out and give the workers their "
                "storage credentials through their environment (e.g. AWS_SECRET_ACCESS_KEY) or credential files."
            )


def _module_source(path: str, data: Mapping[str, Any], schedule: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The job's `schedule.module_conn_id` and `module_from_env`, checked: one of them, with the handle each needs."""
    conn_id, env = schedule.get("module_conn_id"), data.get("module_from_env")
    for key, value in (("schedule.module_conn_id", conn_id), ("module_from_env", env)):
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise ConfigDiscoveryError(f"{path}: {key} must name {'a connection' if 'conn' in key else 'a variable'}.")
    if conn_id and env:
        raise ConfigDiscoveryError(
            f"{path}: set schedule.module_conn_id or module_from_env, not both: they are two sources of one handle."
        )
    if env:
        if not _ENV_NAME_RE.match(env):
            raise ConfigDiscoveryError(f"{path}: module_from_env must be an environment variable name, got {env!r}.")
        if data.get("module"):
            raise ConfigDiscoveryError(
                f"{path}: set module or module_from_env, not both (module_from_env names the variable holding the handle)."
            )
    module = data.get("module")
    if conn_id and not (isinstance(module, str) and urllib.parse.urlsplit(module).scheme in HTTP_SCHEMES):
        shown = redact(module) if isinstance(module, str) else module
        raise ConfigDiscoveryError(
            f"{path}: schedule.module_conn_id authenticates an http(s):// module handle, not {shown!r}; "
            "gs:// and s3:// modules take their credentials from the workers' environment."
        )
    return conn_id, env


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
        field = _DATAFLOW_ALIASES.get(key) or key
        (config if field in _DATAFLOW_CONFIG_FIELDS else options)[field] = value
    for beam_key, config_field in (("project", "project_id"), ("region", "location")):
        if beam.get(beam_key):
            config.setdefault(config_field, beam[beam_key])
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


def _project_paths(value: Any) -> Any:
    """A path, or each path in a list, taken from the project root (`paths.absolute`)."""
    if isinstance(value, list):
        return [_project_paths(v) for v in value]
    return absolute(value, PROJECT_ROOT) if isinstance(value, str) else value
