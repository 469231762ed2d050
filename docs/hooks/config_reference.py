"""MkDocs hook: the marker `<!-- config-reference -->` becomes the tables of every flag and YAML key of a job.

Both tables are generated from `pipelines.embedding.config` (its argparse
parser and its frozen dataclasses), so the reference cannot drift from the code.
Imports the standard library, PyYAML and that module only: no TensorFlow, no Beam.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from pipelines.embedding import config as embedding_config
from pipelines.embedding.publish_section import PublishSection

MARKER = "<!-- config-reference -->"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_NONE = "—"
# The YAML mappings that are not config fields: (key, type, description).
_MAPPINGS = (
    (
        "beam",
        "mapping",
        "Beam pipeline options by name, e.g. `runner: DataflowRunner`; `true` passes a flag without a value, "
        "a list repeats the flag, a mapping is passed as JSON",
    ),
    ("schedule", "mapping", "read by the Airflow DAGs only (when and how they run this job); the command ignores it"),
    (
        "publish",
        "mapping",
        "publishes the committed table into a PostgreSQL + pgvector collection (see Publishing and search); keys: "
        + ", ".join(f"`{field.name}`" for field in dataclasses.fields(PublishSection))
        + "; exactly one of `conn_id` (Airflow only), `to_env` or a password-free `to`",
    ),
)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    """Replaces the marker with the reference tables; pages without it pass unchanged.

    Args:
      markdown: the page's Markdown source.
      page: the page (unused).
      config: MkDocs' configuration (unused).
      files: the site's files (unused).
      **kwargs: what later MkDocs versions pass besides.

    Returns:
      The page's Markdown, with the tables in place of the marker.
    """
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())


def reference() -> str:
    """The Markdown of both tables: the command-line flags, then the YAML keys."""
    return "\n".join(["### Command-line flags", "", flags_table(), "", "### YAML keys", "", yaml_table(), ""])


def _fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """Every config field: (section, field, type hint), in the order the parser adds their flags."""
    return [
        (section, field, typing.get_type_hints(group)[field.name])
        for group, section in embedding_config.SECTIONS.items()
        for field in dataclasses.fields(group)
    ]


def flags_table() -> str:
    """A Markdown table of every flag the command's parser defines: flag, default, help."""
    defaults = {field.name: field.default for _, field, _ in _fields()}
    rows = ["| flag | default | description |", "| --- | --- | --- |"]
    for action in embedding_config.flag_parser()._actions:
        takes = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
        flags = ", ".join(f"`{flag}{takes}`" for flag in action.option_strings)
        default = _value(defaults[action.dest]) if action.dest in defaults else _NONE
        rows.append(f"| {flags} | {default} | {_cell(action.help or '')} |")
    return "\n".join(rows)


def yaml_table() -> str:
    """A Markdown table of every YAML key: section, key, type, default, description."""
    rows = ["| section | key | type | default | description |", "| --- | --- | --- | --- | --- |"]
    for section, field, hint in _fields():
        description = _cell(field.metadata["help"])
        rows.append(f"| {section} | `{field.name}` | {type_name(hint)} | {_value(field.default)} | {description} |")
    for key, kind, description in _MAPPINGS:
        rows.append(f"| {_NONE} | `{key}` | {kind} | {_NONE} | {description} |")
    return "\n".join(rows)


def type_name(hint: Any) -> str:
    """A field's type as a YAML writer reads it: `integer`, `string or null`, `list of strings`, ...

    Raises:
      TypeError: a type this reference has no words for (a new field type needs them here).
    """
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return f"{type_name(next(arg for arg in args if arg is not type(None)))} or null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is tuple and args and args[-1] is Ellipsis:
        return f"list of {type_name(args[0])}s (or one comma-separated string)"
    if typing.get_origin(hint) is tuple:
        return "[" + ", ".join(type_name(arg) for arg in args) + "]"
    raise TypeError(f"no words for the config type {hint!r}")


def _value(value: Any) -> str:
    """A default as it is written in YAML, in code style; `—` for none."""
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`[{', '.join(str(item) for item in value)}]`"
    if isinstance(value, str) and os.path.isabs(value) and value.startswith(_REPO + os.sep):
        value = os.path.relpath(value, _REPO)  # the bundled sample, named as it lies in the repository
    return f"`{value}`"


def _cell(text: str) -> str:
    """`text` safe in a Markdown table cell: pipes, angle brackets and asterisks escaped."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
