"""Loading an embedding job's config: the defaults, a YAML file (`--config`) and command-line flags, in increasing
precedence, into a validated `EmbedConfig`; flags not defined here are Beam pipeline options.
"""

# Standard library and PyYAML only at import: the DAG files import it while Airflow parses them. It re-exports the
# dataclasses and constants of `job_config` and the path check of `config_checks` for the callers that use them.

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pipelines import console
from pipelines.embedding import job_yaml
from pipelines.embedding.config_checks import check_paths, validate
from pipelines.embedding.config_errors import ConfigError, suggest, type_error
from pipelines.embedding.job_config import (
    COMMIT_LOCK,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODULE,
    ERRORS_DIR,
    FETCH_KEYS,
    FORMATS,
    GATE_KEYS,
    REPORT_FILE,
    SAMPLE_INPUT,
    SAMPLE_OUTPUT,
    SECTIONS,
    SOURCE_KEYS,
    SPEED_KEYS,
    SUCCESS_FILE,
    TABLE_COLUMNS,
    TMP_PREFIX,
    EmbedConfig,
    ModelConfig,
    PreprocessConfig,
    SinkConfig,
    SourceConfig,
    infer_format,
)
from pipelines.embedding.publish_section import PublishSection, publish_section

__all__ = [
    "COMMIT_LOCK",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MODULE",
    "ERRORS_DIR",
    "FETCH_KEYS",
    "FORMATS",
    "GATE_KEYS",
    "REPORT_FILE",
    "SAMPLE_INPUT",
    "SAMPLE_OUTPUT",
    "SECTIONS",
    "SOURCE_KEYS",
    "SPEED_KEYS",
    "SUCCESS_FILE",
    "TABLE_COLUMNS",
    "TMP_PREFIX",
    "ConfigError",
    "EmbedConfig",
    "ModelConfig",
    "PreprocessConfig",
    "SinkConfig",
    "SourceConfig",
    "check_paths",
    "flag_parser",
    "from_dict",
    "infer_format",
    "load",
]

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
    return validate(cfg)


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
