"""The embedding job config's checks: every key's value, and the input and output paths on the file system."""

from __future__ import annotations

import dataclasses
import os
import re

from pipelines.embedding.config_errors import ConfigError, suggest
from pipelines.embedding.job_config import (
    COMMIT_LOCK,
    ERRORS_DIR,
    FORMATS,
    REPORT_FILE,
    SAMPLE_INPUT,
    SAMPLE_OUTPUT,
    SUCCESS_FILE,
    TABLE_COLUMNS,
    TMP_PREFIX,
    EmbedConfig,
    SinkConfig,
    SourceConfig,
    infer_format,
)
from pipelines.embedding.paths import absolute, absolute_beam_paths, is_local, normalize
from pipelines.embedding.publish_section import PublishSection
from pipelines.hub.errors import HandleError
from pipelines.hub.flags import OP_NAME
from pipelines.hub.limits import Limits
from pipelines.hub.urls import check_url


def validate(cfg: EmbedConfig) -> EmbedConfig:
    """Checks every key of a config built from checked, typed values, and fills in what it leaves to defaults.

    Args:
      cfg: the config as its keys give it.

    Returns:
      The config with its input format inferred, the sample job's output set, and local paths made absolute.

    Raises:
      ConfigError: an invalid value, naming the key and what it may be.
    """
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
