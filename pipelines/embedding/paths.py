"""Local paths and remote handles: which is which, absolute paths for workers, and paths as the user reads them.

Standard library only: the DAG files import it while Airflow parses them.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence

# Beam pipeline options that name local files or directories (`--name=value` or `--name value`).
BEAM_PATH_OPTIONS = (
    "temp_location",
    "staging_location",
    "setup_file",
    "requirements_file",
    "requirements_cache",
    "extra_package",
    "extra_packages",
)


def is_local(path: str) -> bool:
    """True for plain paths and file:// URLs, False for gs://, s3:// and other URLs."""
    return urllib.parse.urlsplit(path).scheme in ("", "file")


def absolute(path: str, base: str | None = None) -> str:
    """A local path made absolute against `base`; URLs are returned unchanged.

    `gs://`, `s3://`, `http(s)://` and `file://` handles (whose paths are
    absolute already) pass as they are. A trailing `/` is kept: an input
    `corpus/` means the files in that directory.

    Args:
      path: a path, glob or handle as the user gave it.
      base: the directory relative paths are relative to; default: the current directory.

    Returns:
      The same location, independent of the working directory.
    """
    if not is_local(path) or path.startswith("file:"):
        return path
    result = os.path.abspath(path if base is None else os.path.join(base, path))
    return result + "/" if path.endswith("/") and result != "/" else result


def absolute_beam_paths(flags: Sequence[str]) -> tuple[str, ...]:
    """Beam flags with the values of `BEAM_PATH_OPTIONS` made absolute (see `absolute`)."""
    out: list[str] = []
    expects_value = False
    for flag in flags:
        if expects_value:
            out.append(absolute(flag))
            expects_value = False
            continue
        name, eq, value = flag.partition("=")
        if name.startswith("--") and name[2:] in BEAM_PATH_OPTIONS:
            if eq:
                flag = f"{name}={absolute(value)}"
            else:
                expects_value = True
        out.append(flag)
    return tuple(out)


def normalize(path: str) -> str:
    """A path in the form two paths are compared in: local ones absolute and plain, remote ones without a trailing `/`."""
    if path.startswith("file://"):
        path = urllib.parse.urlsplit(path).path
    return os.path.abspath(path) if is_local(path) else path.rstrip("/")


def display(path: str) -> str:
    """`path` as the user reads it: relative to the current directory when it lies inside it."""
    if not is_local(path) or path.startswith("file:") or not os.path.isabs(path):
        return path
    here = os.getcwd()
    inside = path == here or path.startswith(here.rstrip("/") + "/")
    return os.path.relpath(path, here) if inside else path
