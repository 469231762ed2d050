"""Reading a YAML job file within bounds: a capped size, and no anchors or aliases.

Standard library and PyYAML only: the DAG files read job files while Airflow parses them.
"""

from __future__ import annotations

from typing import Any

import yaml

# The largest job file read (bytes); a job file is a few dozen keys.
MAX_BYTES = 1 << 20


class JobYamlError(ValueError):
    """A job file that is too large or uses anchors or aliases; the message names the file, never its text."""


def _refuse_anchors(path: str, data: bytes) -> None:
    """Raises JobYamlError at the first anchor (`&name`) or alias (`*name`, `<<: *name`) of a document.

    Job files are flat: nothing in them needs a reference, and an alias is
    what a "billion laughs" document is made of (each level repeats the one
    below, so a few lines expand to billions of values once walked). The
    document is only parsed into events here, which expands nothing.
    """
    for event in yaml.parse(data, Loader=yaml.SafeLoader):
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            alias = isinstance(event, yaml.AliasEvent)
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise JobYamlError(
                f"Config file {path!r} uses {'an alias' if alias else 'an anchor'} ({'*' if alias else '&'}{anchor}) "
                f"at line {line}; anchors and aliases are not allowed in job files (write each "
                f"value out)."
            )


def read(path: str) -> Any:
    """The parsed contents of a YAML job file, refused past `MAX_BYTES` or at its first anchor or alias.

    The size is checked on the bytes read, before anything is parsed; no more
    than `MAX_BYTES` + 1 bytes are read. The file is then read with
    `yaml.safe_load` (plain data: no Python objects).

    Args:
      path: the job file.

    Raises:
      OSError: the file cannot be read.
      JobYamlError: the file is larger than `MAX_BYTES`, or uses an anchor or
        alias (the message gives the line, not its text: a line may hold a secret).
      yaml.YAMLError: the file is not valid YAML.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise JobYamlError(f"Config file {path!r} is larger than {MAX_BYTES:,} bytes, the limit of a job file.")
    _refuse_anchors(path, data)
    return yaml.safe_load(data)
