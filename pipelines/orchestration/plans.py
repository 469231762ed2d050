"""Where a DAG run writes its table, which earlier committed table it reuses, and which one a re-embedding compares with.

A scheduled run writes `<output>/<run stamp>`, a re-embedding
`<output>/<module>-v<version>/<run stamp>`; each reuses the newest committed
run of its own folder before its own stamp. A re-embedding's report compares
its table with the job's newest table of an earlier module version.
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
    return {
        "module": update["handle"],
        "output": join(folder, stamp),
        "reuse": previous_table(folder, stamp),
        "previous": previous_version_table(output_base, module_name, int(update["version"]), stamp),
    }


def previous_version_table(output_base: str, module_name: str, version: int, stamp: str) -> str | None:
    """The job's newest committed table written with an earlier version of its module, or None: what a re-embedding compares with.

    The candidates are the job's runs stamped before `stamp`: scheduled runs
    `<output>/<s>` and re-embeddings `<output>/<module_name>-v<n>/<s>` with
    `n < version`. The newest stamp wins whose manifest describes a table of
    one vector per row; a scheduled run's module version is the one its
    manifest records, and a run whose manifest names another module or no
    version counts as earlier. Listed and read through Beam's FileSystems
    (local, `gs://`, `s3://`).

    Args:
      output_base: the job's output folder.
      module_name: the module being re-embedded with.
      version: its new version.
      stamp: this run's `run_stamp`.
    """
    # Beam (and the sink's PyArrow) are imported when a task runs, never while a DAG file is parsed.
    from apache_beam.io.filesystems import FileSystems

    ensure_filesystem_options()
    prefix = output_base.rstrip("/") + "/"
    folder_re = re.compile(re.escape(module_name) + r"-v(\d+)")
    found: dict[str, tuple[str, int | None]] = {}
    for result in FileSystems.match([prefix + "*/" + SUCCESS_FILE, prefix + "*/*/" + SUCCESS_FILE]):
        for item in result.metadata_list:
            parts = item.path[len(prefix) :].split("/") if item.path.startswith(prefix) else []
            if not parts or parts[-1] != SUCCESS_FILE or len(parts) not in (2, 3):
                continue
            run, folder = parts[-2], parts[0] if len(parts) == 3 else None
            if not _STAMP_RE.match(run) or run >= stamp:
                continue
            if folder is None:
                found[join(output_base, run)] = (run, None)
            elif (matched := folder_re.fullmatch(folder)) and int(matched[1]) < version:
                found[join(output_base, folder, run)] = (run, int(matched[1]))
    for path, (_, folder_version) in sorted(
        found.items(), key=lambda item: (item[1][0], item[1][1] or 0), reverse=True
    ):
        table = _comparable_table(path)
        if table is None:
            continue
        recorded = table.get("module_version") if table.get("module_name") == module_name else None
        earlier = folder_version if folder_version is not None else recorded
        if earlier is None or int(earlier) < version:
            return path
    return None


def _comparable_table(path: str) -> dict[str, Any] | None:
    """The `table` entry of a committed table's manifest when it holds one vector per row, else None."""
    from pipelines.embedding import sinks  # Beam and PyArrow: when a task runs

    try:
        manifest = sinks.read_table_manifest(path)
    except Exception:  # noqa: BLE001 - an unreadable manifest is no table to compare with
        return None
    table = manifest.get("table") if isinstance(manifest, dict) else None
    if (
        not isinstance(table, dict)
        or not table.get("fingerprint")
        or not table.get("dimension")
        or table.get("sequence")
    ):
        return None
    return table
