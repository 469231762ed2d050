"""Embedding job configuration: frozen dataclasses, YAML + flags, and all their validation.

Values come from, in increasing precedence: the defaults here, a YAML file
(`--config`) and command-line flags; flags not defined here are Beam pipeline
options. Standard library and PyYAML only: the DAG files import it while
Airflow parses them (Beam is imported inside the checks that need it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pipelines import console
from pipelines.embedding import job_yaml
from pipelines.embedding.config_errors import ConfigError, suggest, type_error
from pipelines.embedding.paths import absolute, absolute_beam_paths, is_local, normalize
from pipelines.embedding.publish_section import PublishSection, publish_section
from pipelines.hub.errors import HandleError
from pipelines.hub.flags import HELP as HUB_HELP
from pipelines.hub.flags import OP_NAME
from pipelines.hub.limits import DEFAULT_LIMITS, Limits
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import ResolveOptions
from pipelines.hub.urls import check_url

FORMATS = ("txt", "jsonl", "csv", "parquet", "tfrecord", "image")
_EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".jpg": "image",
    ".jpeg": "image",
    ".png": "image",
}
DEFAULT_MODULE = "build/modules/all-minilm-l6-v2/1"
SAMPLE_INPUT = str(importlib.resources.files("pipelines.data") / "sample.txt")
SAMPLE_OUTPUT = "output/sample"
DEFAULT_BATCH_SIZE = {"text": 256, "image": 32}
TABLE_COLUMNS = ("id", "embedding", "content_hash")
SUCCESS_FILE = "_SUCCESS"
# The table's HTML report, written beside it after its commit (`pipelines.report`; readers skip `_` files).
REPORT_FILE = "_report.html"
ERRORS_DIR = "errors"
TMP_PREFIX = ".tmp-"
# The output's commit lock, held while a run commits (see `output_locks.commit_lock`); removed by its holder.
COMMIT_LOCK = ".commit.lock"


def _option(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where records come from and how they are read."""

    input: str = _option(SAMPLE_INPUT, "input file or glob (local, gs://, s3://); default: the bundled sample")
    input_format: str | None = _option(None, f"one of {', '.join(FORMATS)}; default: from the input's extension")
    text_field: str = _option("text", "field holding the text (jsonl, csv, parquet, tfrecord)")
    id_field: str | None = _option(None, "field holding the record id; default: <file>:<line or record number>")
    passthrough: tuple[str, ...] = _option((), "fields copied to the output table, comma-separated")

    @property
    def kind(self) -> str:
        """ "image" for image sets, else "text"."""
        return "image" if self.input_format == "image" else "text"


# Settings that change how fast a run goes, not what it writes (left out of `config_hash`).
SPEED_KEYS = frozenset({"decode_threads"})
# Where a setting came from, not what it is (left out of `config_hash`).
SOURCE_KEYS = frozenset({"module_from_env"})
# Which of the module's ops may run: a decision about trust, not about what the module computes (left out of
# `config_hash`).
GATE_KEYS = frozenset({"allow_ops", "trust_module"})
# How far fetching the module is trusted, not what the module computes (left out of `config_hash`).
FETCH_KEYS = frozenset({field.name for field in dataclasses.fields(Limits)} | {"allow_insecure_http", "verify_cache"})


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Limits and shapes applied before the module sees a record."""

    image_size: tuple[int, int] | None = _option(
        None, "HEIGHT,WIDTH to resize images to when the module's input size is open"
    )
    max_text_bytes: int = _option(1 << 20, "longer texts (UTF-8 bytes) are dead-lettered")
    max_image_pixels: int = _option(50_000_000, "larger images are dead-lettered (decompression-bomb guard)")
    decode_threads: int | None = _option(
        None,
        "images decoded side by side per worker process (in one process, module calls side by side, "
        "each decoding its own images); default: the process's share of the cores",
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which module, signature and output embed the records, and how far fetching the module is trusted."""

    module: str = _option(DEFAULT_MODULE, "module handle: directory, .tar.gz, file://, http(s)://, gs://, s3://")
    module_from_env: str | None = _option(
        None,
        "name of an environment variable holding the module handle, read instead of module: keeps a handle with "
        "credentials (user:password@, ?token=) off command lines and out of config files",
    )
    signature: str = _option("default", "signature to call")
    output_key: str = _option("default", "output of the signature to store")
    output_length_key: str | None = _option(
        None,
        "for a per-token output [N, T, D]: the signature's output holding each row's token count (int [N]) or "
        "mask (int/bool [N, T]); default: found by its shape (see inspect)",
    )
    batch_size: int | None = _option(
        None,
        "rows per module call; default: the module's recommendation (module.json serving.batch_size), "
        f"else {DEFAULT_BATCH_SIZE['text']} texts, {DEFAULT_BATCH_SIZE['image']} images",
    )
    allow_ops: tuple[str, ...] = _option(
        (),
        "TensorFlow ops the op gate lets the module run although they read or write files, list directories, run "
        "Python or reach the network (comma-separated, e.g. ReadFile,WriteFile); only for a module you trust",
    )
    trust_module: bool = _option(
        False, "run the module whatever ops it holds (the op gate still records them in the manifest)"
    )
    max_download_bytes: int = _option(DEFAULT_LIMITS.max_download_bytes, HUB_HELP["max_download_bytes"])
    max_unpacked_bytes: int = _option(DEFAULT_LIMITS.max_unpacked_bytes, HUB_HELP["max_unpacked_bytes"])
    max_archive_members: int = _option(DEFAULT_LIMITS.max_archive_members, HUB_HELP["max_archive_members"])
    max_member_path_length: int = _option(DEFAULT_LIMITS.max_member_path_length, HUB_HELP["max_member_path_length"])
    max_compression_ratio: float = _option(DEFAULT_LIMITS.max_compression_ratio, HUB_HELP["max_compression_ratio"])
    allow_insecure_http: bool = _option(False, HUB_HELP["allow_insecure_http"])
    verify_cache: bool = _option(False, HUB_HELP["verify_cache"])

    def resolve_options(self) -> ResolveOptions:
        """The limits and trust `pipelines.hub.registry.resolve` applies to this job's module."""
        limits = Limits(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Limits)})
        return ResolveOptions(limits, allow_insecure_http=self.allow_insecure_http, verify_cache=self.verify_cache)


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    """Where the table goes, when a run counts as failed, and which earlier table it may reuse vectors from."""

    output: str | None = _option(
        None, f"output directory; default with the sample input: {SAMPLE_OUTPUT} (replaced on every run)"
    )
    overwrite: bool = _option(False, "replace a table already committed at --output")
    max_error_fraction: float = _option(0.01, "fail the run (no _SUCCESS) when more records than this fail")
    reuse: str | None = _option(
        None,
        "a committed table (local, gs://, s3://) whose vectors this run takes for unchanged contents instead of "
        "computing them; used only when it was written with the same module, signature, output and preprocessing",
    )
    report: bool = _option(
        True,
        "after the commit, write the table's HTML report to OUTPUT/_report.html (a sample's map, near-duplicates, "
        "neighbours, dead letters); a report that fails is a warning, the table stays committed",
    )
    report_compare: str | None = _option(
        None, "a committed table (e.g. the previous module version's) the report compares this one with"
    )
    report_color_by: str | None = _option(None, "the passthrough column colouring the report's map")

    @property
    def output_dir(self) -> str:
        """`output` of a validated config, which always sets it (see `load`, `from_dict`)."""
        if self.output is None:
            raise ValueError(
                "SinkConfig.output is unset: the config was not validated (config.load, config.from_dict)."
            )
        return self.output


# Where a `publish:` section may name its database: exactly one of them.
@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """A validated embedding job.

    Attributes:
      source: input files and how to read them.
      preprocess: text/image limits and image size.
      model: module handle, signature, output key, batch size.
      sink: output directory, overwrite, error budget.
      beam_args: Beam pipeline options, as command-line flags.
      publish: the collection the committed table is published into, if any (not part of `to_dict`).
    """

    source: SourceConfig = SourceConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    sink: SinkConfig = SinkConfig()
    beam_args: tuple[str, ...] = ()
    publish: PublishSection | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat key -> value view (YAML keys), with secrets dropped from the module handle."""
        flat: dict[str, Any] = {}
        for group in SECTIONS:
            for field in dataclasses.fields(group):
                value = getattr(getattr(self, SECTIONS[group]), field.name)
                flat[field.name] = list(value) if isinstance(value, tuple) else value
        flat["module"] = redact(flat["module"])
        return flat

    def config_hash(self) -> str:
        """`sha256:<hex>` of everything that decides the table's content (not where it goes, nor how fast)."""
        skipped = {f.name for f in dataclasses.fields(SinkConfig)} | SPEED_KEYS | SOURCE_KEYS | FETCH_KEYS | GATE_KEYS
        content = {k: v for k, v in self.to_dict().items() if k not in skipped}
        return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# Each part of a job and its attribute of `EmbedConfig`; the YAML file and the flags are flat (one key per field).
SECTIONS = {SourceConfig: "source", PreprocessConfig: "preprocess", ModelConfig: "model", SinkConfig: "sink"}
_KEYS: dict[str, tuple[type, dataclasses.Field, Any]] = {
    field.name: (group, field, typing.get_type_hints(group)[field.name])
    for group in SECTIONS
    for field in dataclasses.fields(group)
}


# --------------------------------------------------------------------------- types


def _coerce(key: str, value: Any, from_flag: bool) -> Any:
    """Checks (YAML) or parses (flag text) one value against its field's type."""
    hint = _KEYS[key][2]
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise type_error(key, "set", value)
    base = next((a for a in args if a is not type(None)), hint) if type(None) in args else hint
    origin = typing.get_origin(base)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise type_error(key, "true or false", value)
    if base in (int, float):
        if from_flag and isinstance(value, str):
            try:
                return base(value)
            except ValueError:
                raise type_error(key, f"a{'n integer' if base is int else ' number'}", value) from None
        if isinstance(value, bool) or not isinstance(value, (int, float) if base is float else int):
            raise type_error(key, "an integer" if base is int else "a number", value)
        return base(value)
    if base is str:
        if isinstance(value, str):
            return value
        raise type_error(key, "a string", value)
    if origin is tuple and typing.get_args(base)[-1] is Ellipsis:  # tuple[str, ...]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise type_error(key, "a list of strings or a comma-separated string", value)
        return tuple(i.strip() for i in items if i.strip())
    if origin is tuple:  # tuple[int, int]: image size
        return _image_size(key, value)
    raise AssertionError(f"unhandled type {hint} for {key}")  # a new field needs a rule here


def _image_size(key: str, value: Any) -> tuple[int, int]:
    """`224`, `"224"`, `"224,160"`, `"224x160"` or `[224, 160]` -> (height, width)."""
    items = value.replace("x", ",").split(",") if isinstance(value, str) else value
    items = items if isinstance(items, list) else [items]
    sizes = []
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise type_error(key, "HEIGHT,WIDTH (or one size for both)", value)
        sizes.append(item)
    if len(sizes) not in (1, 2):
        raise type_error(key, "HEIGHT,WIDTH (or one size for both)", value)
    return (sizes[0], sizes[-1])


# --------------------------------------------------------------------------- sources of values


def flag_parser() -> argparse.ArgumentParser:
    """The command line's parser: `--config`, `--verbose`, and one flag per config field (its YAML key)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.embed",
        description="Embed a text corpus or an image set with a TF Hub module into a Parquet table. "
        "Flags not listed here are Beam pipeline options (--runner, --direct_num_workers, ...).",
        allow_abbrev=False,
        exit_on_error=False,
    )
    parser.add_argument("--config", help="YAML job file; its keys are these flags' names with underscores")
    console.add_verbose_flag(parser)  # acted on at start-up, before TensorFlow's import (see pipelines.console)
    for key, (_, field, hint) in _KEYS.items():
        flags = [f"--{key.replace('_', '-')}"] + ([f"--{key}"] if "_" in key else [])
        if hint is bool:
            parser.add_argument(
                *flags, dest=key, action=argparse.BooleanOptionalAction, default=None, help=field.metadata["help"]
            )
        else:
            parser.add_argument(*flags, dest=key, default=None, metavar=key.upper(), help=field.metadata["help"])
    return parser


def _read_yaml(path: str) -> tuple[dict[str, Any], list[str], PublishSection | None]:
    """Returns the flat keys, the Beam flags (from `beam:`) and the `publish:` section of a YAML job file."""
    try:
        data = job_yaml.read(path)  # size capped, anchors and aliases refused (a "billion laughs" file)
    except OSError as e:
        raise ConfigError(f"Config file {path!r} cannot be read: {e.strerror}.") from None
    except job_yaml.JobYamlError as e:
        raise ConfigError(str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path!r} is not valid YAML: {e}") from None
    if data is None:
        return {}, [], None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path!r} must hold a mapping of keys to values, got {type(data).__name__}.")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    # `schedule:` is Airflow-only metadata (read and validated by pipelines/orchestration/discovery.py), so
    # one YAML file serves both `python -m pipelines.embed --config` and the DAGs.
    if not isinstance(data.pop("schedule", None) or {}, dict):
        raise ConfigError(f"'schedule' in {path!r} must be a mapping (see pipelines/orchestration/discovery.py).")
    beam = data.pop("beam", None) or {}
    if not isinstance(beam, dict):
        raise ConfigError(f"'beam' in {path!r} must be a mapping of Beam option names to values.")
    publish = data.pop("publish", None)
    return data, _beam_flags(beam), publish_section(publish, path) if publish is not None else None


def _beam_flags(options: Mapping[str, Any]) -> list[str]:
    """Turns a YAML `beam:` mapping into command-line flags (lists repeat the flag)."""
    flags = []
    for name, value in options.items():
        if value is False:
            raise ConfigError(
                f"beam option {name}: false is ambiguous; leave it out, or set the flag that "
                f"disables it (e.g. no_use_public_ips: true)."
            )
        if value is True:
            flags.append(f"--{name}")
        elif isinstance(value, dict):
            flags.append(f"--{name}={json.dumps(value)}")
        else:
            flags += [f"--{name}={item}" for item in (value if isinstance(value, list) else [value])]
    return flags


def _check_beam_flags(flags: Sequence[str]) -> None:
    """Rejects flags that are neither ours nor a Beam pipeline option."""
    from apache_beam.options.pipeline_options import PipelineOptions  # Beam: heavy, and the DAGs import this module

    known = PipelineOptions([]).get_all_options()
    try:
        given = PipelineOptions(list(flags)).get_all_options(retain_unknown_options=True, display_warnings=False)
    except SystemExit:  # Beam's parser has printed why (e.g. a missing value) and tried to exit.
        raise ConfigError(f"Invalid Beam pipeline options {list(flags)}: see the error above.") from None
    unknown = sorted(set(given) - set(known))
    if unknown:
        ours = [k.replace("_", "-") for k in _KEYS]
        name = unknown[0]
        raise ConfigError(
            f"Unknown flag --{name}: not a hub-embed flag nor a Beam pipeline option; "
            f"{suggest(name.replace('_', '-'), ours) or suggest(name, list(known))}"
            f"hub-embed flags: {', '.join('--' + k for k in ours)}."
        )


def load(argv: Sequence[str] = ()) -> EmbedConfig:
    """Parses command-line flags (and the YAML file `--config` names) into a validated config.

    Args:
      argv: command-line arguments, without the program name.

    Returns:
      The validated config; flags that are not hub-embed flags are in `beam_args`.

    Raises:
      ConfigError: an unknown key or flag, a wrong type, or an invalid value.
    """
    try:
        flags, rest = flag_parser().parse_known_args(list(argv))
    except argparse.ArgumentError as e:
        raise ConfigError(str(e)) from None
    values: dict[str, Any] = {}
    beam_args: list[str] = []
    publish = None
    if flags.config:
        values, beam_args, publish = _read_yaml(flags.config)
        _check_keys(values, where=f"in {flags.config}")
        values = {k: _coerce(k, v, from_flag=False) for k, v in values.items()}
    for key, value in vars(flags).items():
        if key in _KEYS and value is not None:
            values[key] = _coerce(key, value, from_flag=True)
    beam_args += rest
    _check_beam_flags(beam_args)
    return _build(values, beam_args, publish)


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    for key in values:
        if key not in _KEYS:
            raise ConfigError(
                f"Unknown config key {key!r} {where}; {suggest(key, list(_KEYS))}"
                f"valid keys: {', '.join(sorted(_KEYS))}, beam, publish, schedule."
            )


def from_dict(
    values: Mapping[str, Any], beam_args: Sequence[str] = (), publish: PublishSection | None = None
) -> EmbedConfig:
    """Builds a validated config from flat keys (the YAML keys), as tests and DAGs do.

    Raises:
      ConfigError: an unknown key, a wrong type, or an invalid value.
    """
    _check_keys(values, where="")
    return _build({k: _coerce(k, v, from_flag=False) for k, v in values.items()}, beam_args, publish)


def _build(values: Mapping[str, Any], beam_args: Sequence[str], publish: PublishSection | None) -> EmbedConfig:
    """The validated config from checked, typed flat values."""
    if values.get("module_from_env") is not None:
        values = {**values, "module": _module_from_env(values)}
    groups: dict[type, dict[str, Any]] = {group: {} for group in SECTIONS}
    for key, value in values.items():
        groups[_KEYS[key][0]][key] = value
    cfg = EmbedConfig(
        **{name: group(**groups[group]) for group, name in SECTIONS.items()},
        beam_args=tuple(beam_args),
        publish=publish,
    )
    return _validate(cfg)


def _module_from_env(values: Mapping[str, Any]) -> str:
    """The module handle in the environment variable `module_from_env` names; it and `module` exclude each other."""
    name = values["module_from_env"]
    if "module" in values:
        raise ConfigError(
            "Set module or module_from_env, not both (module_from_env names the variable holding the handle)."
        )
    handle = os.environ.get(name, "").strip()
    if not handle:
        raise ConfigError(f"module_from_env names the environment variable {name!r}, which is not set or empty.")
    return handle


# --------------------------------------------------------------------------- validation


def infer_format(path: str) -> str | None:
    """The input format an input path's extension implies (compression suffixes skipped), or None."""
    from apache_beam.io.filesystem import CompressionTypes  # Beam: heavy, and the DAGs import this module

    root, ext = os.path.splitext(path.lower())
    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
        ext = os.path.splitext(root)[1]
    return _EXTENSIONS.get(ext)


def _validate(cfg: EmbedConfig) -> EmbedConfig:
    source, pre, model, sink = cfg.source, cfg.preprocess, cfg.model, cfg.sink
    if not source.input.strip():
        raise ConfigError("input must name a file or glob, got ''.")
    input_format = source.input_format or infer_format(source.input)
    if input_format is None:
        raise ConfigError(
            f"Cannot tell the input format of {source.input!r} from its extension; set input_format to one of: "
            f"{', '.join(FORMATS)}."
        )
    if input_format not in FORMATS:
        raise ConfigError(
            f"input_format {input_format!r} is not supported; {suggest(input_format, FORMATS)}"
            f"valid formats: {', '.join(FORMATS)}."
        )
    source = dataclasses.replace(source, input_format=input_format)
    if input_format in ("txt", "image"):
        ids = "<file>:<line>" if input_format == "txt" else "the file path"
        for key in ("id_field", "passthrough"):
            if getattr(source, key):
                raise ConfigError(
                    f"{key} does not apply to {input_format} input (records have no fields; ids are {ids})."
                )
    elif not source.text_field:
        raise ConfigError(f"text_field must name the field holding the text of each {input_format} record.")
    for name in source.passthrough:
        if name in TABLE_COLUMNS:
            raise ConfigError(f"passthrough column {name!r} clashes with the table's own columns {TABLE_COLUMNS}.")
    if len(set(source.passthrough)) != len(source.passthrough):
        raise ConfigError(f"passthrough lists a column twice: {list(source.passthrough)}.")
    _positive("max_text_bytes", pre.max_text_bytes)
    _positive("max_image_pixels", pre.max_image_pixels)
    if pre.decode_threads is not None:
        _positive("decode_threads", pre.decode_threads)
    for size in pre.image_size or ():
        _positive("image_size", size)
    for key in ("module", "signature", "output_key"):
        if not getattr(model, key).strip():
            raise ConfigError(f"{key} must not be empty.")
    if model.output_length_key is not None and not model.output_length_key.strip():
        raise ConfigError("output_length_key must not be empty (leave it out to find it by shape).")
    if model.batch_size is not None:  # None: decided with the module (`model_spec.for_module`)
        _positive("batch_size", model.batch_size)
    for op in model.allow_ops:
        if not OP_NAME.fullmatch(op):
            raise ConfigError(f"allow_ops: {op!r} is not a TensorFlow op name (letters, digits and '_').")
    for field in dataclasses.fields(Limits):
        if getattr(model, field.name) <= 0:
            raise ConfigError(f"{field.name} must be positive, got {getattr(model, field.name)}.")
    try:
        check_url(model.module)
    except HandleError as e:
        raise ConfigError(str(e)) from None
    output, overwrite = sink.output, sink.overwrite
    if output is None:  # The sample job's own output: no one else's table to protect, so each run replaces it.
        if source.input != SAMPLE_INPUT:
            raise ConfigError("output is required: the directory the embedding table is written to.")
        output, overwrite = SAMPLE_OUTPUT, True
    if not output.strip():
        raise ConfigError("output must name a directory, got ''.")
    if sink.reuse is not None and not sink.reuse.strip():
        raise ConfigError("reuse must name a committed table directory, got ''.")
    if not 0.0 <= sink.max_error_fraction <= 1.0:
        raise ConfigError(f"max_error_fraction must be between 0 and 1, got {sink.max_error_fraction}.")
    _check_report(sink, source)
    _check_output_outside_input(source.input, output)
    if cfg.publish is not None:
        _check_publish(cfg.publish, output)
    # Local paths are made absolute here, once: the job then means the same files on every worker,
    # wherever it was started (a portable runner's workers run in their own directory).
    reuse = absolute(sink.reuse) if sink.reuse is not None else None
    compare = absolute(sink.report_compare) if sink.report_compare is not None else None
    return dataclasses.replace(
        cfg,
        source=dataclasses.replace(source, input=absolute(source.input)),
        model=dataclasses.replace(model, module=absolute(model.module)),
        sink=dataclasses.replace(
            sink, output=absolute(output), overwrite=overwrite, reuse=reuse, report_compare=compare
        ),
        beam_args=absolute_beam_paths(cfg.beam_args),
    )


def _check_report(sink: SinkConfig, source: SourceConfig) -> None:
    """The report's keys: a comparison only with a report, a colour only from a column the table will hold."""
    if not sink.report and (sink.report_compare is not None or sink.report_color_by is not None):
        raise ConfigError("report_compare and report_color_by go with report: true (the report is off).")
    if sink.report_compare is not None and not sink.report_compare.strip():
        raise ConfigError("report_compare must name a committed table directory, got ''.")
    columns = [*source.passthrough, "content_hash"]
    if sink.report_color_by is not None and sink.report_color_by not in columns:
        raise ConfigError(
            f"report_color_by {sink.report_color_by!r} is not a column of the table; "
            f"{suggest(sink.report_color_by, columns)}its columns to colour by: {', '.join(columns)}."
        )


def _check_publish(publish: PublishSection, table: str) -> None:
    """Checks a `publish:` section's collection name and options by the publish's own rules.

    The database is not known yet (it may be an Airflow connection): an empty `Target` stands for it.
    """
    # The publish package brings psycopg: the DAGs import this module while Airflow parses them.
    from pipelines.publish.errors import PublishError
    from pipelines.publish.options import PublishConfig
    from pipelines.publish.target import Target

    options = publish.options()
    try:
        PublishConfig(table, Target(conninfo="", display=""), publish.collection, options)
    except PublishError as e:
        raise ConfigError(f"publish: {e}") from None


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value}.")


def _glob_matches(pattern: str, path: str) -> bool:
    """Whether Beam's file matching (`FileSystems.match`) would match `path` with `pattern`.

    Beam's `*` stays within one directory and `**` crosses directories, unlike
    `fnmatch`, whose `*` matches `/` too.
    """
    from apache_beam.io.filesystem import FileSystem  # Beam: heavy, and the DAGs import this module

    if pattern.endswith(("/", "\\")):
        pattern += "*"
    return re.match(FileSystem.translate_pattern(pattern), path) is not None


def _check_output_outside_input(input_pattern: str, output: str, resolve_links: bool = False) -> None:
    """Rejects an output whose files the input glob would read back (a re-run would embed the table).

    With `resolve_links`, local paths are compared after resolving symbolic
    links (file system access: done by `check_paths`).
    """
    pattern, out = normalize(input_pattern), normalize(output)
    if resolve_links and is_local(pattern) and is_local(out):
        pattern, out = os.path.realpath(pattern), os.path.realpath(out)
    written = [
        f"{out}/part-0.parquet",
        f"{out}/{ERRORS_DIR}/part-0.parquet",
        f"{out}/{SUCCESS_FILE}",
        f"{out}/{TMP_PREFIX}0/part-0.parquet",
    ]
    hits = [p for p in written if _glob_matches(pattern, p)]
    if hits or out == pattern:
        raise ConfigError(
            f"output {output!r} is inside the input {input_pattern!r}: the input would match files the job "
            f"writes (e.g. {hits[0] if hits else out}). Choose an output outside the input."
        )


def check_paths(cfg: EmbedConfig) -> None:
    """Checks the file system: the input matches files and the output may be written.

    An output directory may be new, hold only what an interrupted run left
    (parts without `_SUCCESS`, `.tmp-*`), or hold a committed table when
    `overwrite` is set. Anything else is refused.

    Raises:
      ConfigError: naming the path and what is wrong with it.
    """
    from apache_beam.io.filesystems import FileSystems  # Beam: heavy, and the DAGs import this module

    pattern = cfg.source.input
    try:
        matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception as e:  # Beam raises BeamIOError, or a backend's own error for remote paths.
        raise ConfigError(f"input {pattern!r} cannot be listed: {e}") from None
    if is_local(pattern):
        matched = [p for p in matched if not os.path.isdir(p)]
    if not matched:
        raise ConfigError(f"input {pattern!r} matches no files.")
    output = cfg.sink.output_dir
    _check_output_outside_input(pattern, output, resolve_links=True)
    if is_local(output):
        _check_local_output(normalize(output), cfg.sink.overwrite)
    elif FileSystems.exists(FileSystems.join(output, SUCCESS_FILE)) and not cfg.sink.overwrite:
        raise ConfigError(
            f"output {output!r} already holds a table (it has {SUCCESS_FILE}); pass --overwrite to replace it."
        )


def _check_local_output(output: str, overwrite: bool) -> None:
    existing = output
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"output {output!r} cannot be a directory: {existing!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output {output!r} cannot be written: {existing!r} is not writable.")
    if existing != output:
        return
    entries = sorted(os.listdir(output))
    if SUCCESS_FILE in entries and not overwrite:
        raise ConfigError(
            f"output {output!r} already holds a table (it has {SUCCESS_FILE}); pass --overwrite to replace it."
        )
    foreign = [e for e in entries if not _is_table_entry(e)]
    if foreign:
        raise ConfigError(
            f"output {output!r} holds files that are not part of an embedding table: {foreign[:5]}; "
            f"choose an empty or new directory."
        )


def _is_table_entry(name: str) -> bool:
    return (
        name in (SUCCESS_FILE, REPORT_FILE, ERRORS_DIR, COMMIT_LOCK)
        or name.startswith(TMP_PREFIX)
        or (name.startswith("part-") and name.endswith(".parquet"))
    )
