"""Where a DAG run writes its table and which earlier committed table it reuses.

A scheduled run writes `<output>/<run stamp>`, a re-embedding
`<output>/<module>-v<version>/<run stamp>`; each reuses the newest committed
run of its own folder before its own stamp.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from pipelines.embedding.config import SUCCESS_FILE  # stdlib + PyYAML only: cheap at parse time
from pipelines.hub.beam_filesystems import ensure_filesystem_options

_STAMP_RE = re.compile(r"^\d{8}T\d{6}(-\d{6})?$")  # what `run_stamp` writes


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
    endpoints from the environment). On object stores the listing walks every
    object under `folder`.

    Args:
      folder: the folder of one job's runs (a config's output base, or one of
        its `<module>-v<version>` folders).
      stamp: this run's `run_stamp`.
    """
    # Beam is imported when a task runs, never while a DAG file is parsed.
    from apache_beam.io.filesystems import FileSystems

    ensure_filesystem_options()
    prefix = folder.rstrip("/") + "/"
    matched = FileSystems.match([prefix + "*/" + SUCCESS_FILE])[0].metadata_list
    stamps = []
    for item in matched:
        parts = item.path[len(prefix) :].split("/") if item.path.startswith(prefix) else []
        if len(parts) == 2 and parts[1] == SUCCESS_FILE and _STAMP_RE.match(parts[0]) and parts[0] < stamp:
            stamps.append(parts[0])
    return join(folder, max(stamps)) if stamps else None


def scheduled_plan(output_base: str, module: str | None, stamp: str) -> dict[str, str | None]:
    """A scheduled run's plan: its module, its table `<output>/<stamp>`, and the previous committed run to reuse.

    The module is a credential-free handle, or None when the job reads it from the workers' environment.
    """
    return {"module": module, "output": join(output_base, stamp), "reuse": previous_table(output_base, stamp)}


def reembed_plan(update: Mapping[str, Any], module_name: str, output_base: str, stamp: str) -> dict[str, str | None]:
    """A re-embedding's plan: the updated module, `<output>/<module>-v<version>/<stamp>`, and what it may reuse.

    Only an earlier committed run of the same `<module>-v<version>` folder is
    offered for reuse, never a scheduled run or another version's table.
    """
    folder = join(output_base, f"{module_name}-v{update['version']}")
    return {"module": update["handle"], "output": join(folder, stamp), "reuse": previous_table(folder, stamp)}
