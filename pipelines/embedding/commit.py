"""The commit of a table: counts checked, parts moved into place, `_SUCCESS` swapped in only over the table seen at launch.

One writer per table: a run replaces only the table its output held when its
graph was built (or none), so of two runs into one output exactly one
commits; the other fails with `CommitConflict` and removes only its own
files. How and why: docs/design/embedding.md.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.embedding import manifest_store, output_locks
from pipelines.embedding.config import ERRORS_DIR, TMP_PREFIX, SinkConfig
from pipelines.embedding.manifest_store import StoredManifest
from pipelines.embedding.paths import is_local, normalize
from pipelines.embedding.records import Failure
from pipelines.hub.redaction import redact

MANIFEST_FORMAT = "hub-embed-table/1"
# Counts the pipeline tallies where rows get their vectors (see `records.tally`), recorded in the manifest.
TALLY_NAMES = ("rows_embedded", "rows_reused", "rows_deduplicated", "contents_embedded")
_LOG = logging.getLogger(__name__)


class CommitError(RuntimeError):
    """The run cannot be committed: counts do not add up, or too many records failed."""


class CommitConflict(CommitError):
    """Another run committed to the output while this one ran; this run committed nothing."""


class PartFile(NamedTuple):
    """A written part: its path relative to the run's temp dir, and its row count."""

    name: str
    rows: int


class _WithoutConflicts(logging.Filter):
    """Drops the records Beam logs for a step that raised `CommitConflict`: the exception, or its traceback as text."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, CommitConflict):
            return False
        return f"{CommitConflict.__module__}.{CommitConflict.__name__}: " not in record.getMessage()


# Where Beam logs a failed step: the step's runner, and a worker process's harness (the failed bundle's traceback).
_BEAM_STEP_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker")


def quiet_conflict_tracebacks() -> None:
    """Keeps Beam from logging a lost commit with its traceback, as it logs every step that raises.

    For commands that report the conflict themselves, in one line, and the
    worker processes of their multi-process runs.
    """
    for name in _BEAM_STEP_LOGGERS:
        logging.getLogger(name).addFilter(_WithoutConflicts())


def conflict_message(output: str, committed: str | None, replaced: str | None) -> str:
    """What a run that lost its output to another run says (see `CommitConflict`)."""
    if committed is None:
        return f"the table {replaced} that this run was to replace was removed from {redact(output)} while this one ran"
    return f"another run committed {committed} to {redact(output)} while this one ran"


def seen_table(cfg: SinkConfig) -> str | None:
    """The run id of the table a run may replace, read at launch: the output's table with `overwrite`, else None.

    Without `overwrite` a run commits only into an output that still holds no
    table when it commits.
    """
    return manifest_store.read(cfg.output_dir).run_id if cfg.overwrite else None


def mark_run(cfg: SinkConfig, run_id: str) -> None:
    """Marks a run live in its local output, from its launcher, until `release_run` or the launcher's end.

    Another run's commit removes this run's temp files only once the mark is
    no longer held (`output_locks.is_gone`). Nothing to do on `gs://` or `s3://`.

    Raises:
      pipelines.hub.locks.LockError: a lock file in the output is unsafe, or the commit lock was not free in time.
    """
    if not is_local(cfg.output_dir):
        return
    output = normalize(cfg.output_dir)
    with output_locks.commit_lock(output):  # a commit never sees the run's temp directory unmarked
        output_locks.mark_live(os.path.join(output, TMP_PREFIX + run_id))


def release_run(cfg: SinkConfig, run_id: str) -> None:
    """Lets go of the mark `mark_run` took, once the launcher knows the run is over."""
    if is_local(cfg.output_dir):
        output_locks.release(os.path.join(normalize(cfg.output_dir), TMP_PREFIX + run_id))


class Commit(beam.DoFn):
    """Checks the counts, moves the run's parts into place and swaps in `_SUCCESS` over the table seen at launch."""

    def __init__(self, cfg: SinkConfig, run_id: str, schema: pa.Schema, manifest: dict[str, Any], replaces: str | None):
        """Initializes the commit.

        Args:
          cfg: output directory and error budget.
          run_id: this run's id.
          schema: the table schema (for an empty table's part).
          manifest: what `_SUCCESS` records besides counts and files.
          replaces: the run id of the table this run may replace (see `seen_table`).
        """
        self._cfg = cfg
        self._run_id = run_id
        self._schema = schema
        self._manifest = {"format": MANIFEST_FORMAT, "run_id": run_id, **manifest}
        self._replaces = replaces

    def process(
        self,
        _: Any,
        parts: list[PartFile],
        error_parts: list[PartFile],
        failed_by_stage: dict[str, int],
        examples: list[Failure],
        tallies: dict[str, int],
    ) -> Iterator[dict[str, Any]]:
        output = self._cfg.output_dir
        tmp = FileSystems.join(output, TMP_PREFIX + self._run_id)
        rows_in = int(tallies.get("rows_in", 0))
        written = sum(p.rows for p in parts)
        failed = sum(p.rows for p in error_parts)
        counted = {name: int(tallies.get(name, 0)) for name in TALLY_NAMES}
        with _locked(output):
            seen = manifest_store.read(output)
            if seen.run_id == self._run_id:  # A retry of a commit that got this far.
                self._remove_debris(output, tmp, seen.manifest or {}, None)
                yield seen.manifest or {}
                return
            if seen.run_id != self._replaces:
                self._remove_own(tmp, [])
                raise CommitConflict(conflict_message(output, seen.run_id, self._replaces))
            self._check_counts(output, tmp, rows_in, written, failed, counted, failed_by_stage, examples)
            if not parts:  # An empty table still has its schema.
                parts = [self._write_empty(tmp)]
            files = self._move(tmp, "", parts)
            error_files = self._move(tmp, ERRORS_DIR, error_parts)
            fraction = failed / rows_in if rows_in else 0.0
            manifest = {
                **self._manifest,
                "committed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "counts": {
                    "rows_in": rows_in,
                    "rows_written": written,
                    **counted,
                    "rows_failed": failed,
                    "balanced": True,
                    "error_fraction": fraction,
                    "max_error_fraction": self._cfg.max_error_fraction,
                    "failed_by_stage": dict(sorted(failed_by_stage.items())),
                },
                "files": files,
                "error_files": error_files,
            }
            manifest["table"] = {**manifest["table"], "row_count": written}
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            try:
                manifest_store.replace(output, data, seen, tmp)
            except manifest_store.ManifestChanged:  # gs:// or s3://: another run's manifest came in since `seen`
                self._remove_own(tmp, [FileSystems.join(output, f["path"]) for f in files + error_files])
                raise CommitConflict(
                    conflict_message(output, manifest_store.read(output).run_id, self._replaces)
                ) from None
            self._remove_debris(output, tmp, manifest, seen)
        yield manifest

    def _check_counts(
        self,
        output: str,
        tmp: str,
        rows_in: int,
        written: int,
        failed: int,
        counted: dict[str, int],
        failed_by_stage: dict[str, int],
        examples: list[Failure],
    ) -> None:
        """Raises CommitError unless the counts add up and the failures are within the error budget."""
        if rows_in != written + failed:
            raise CommitError(
                f"Row counts do not add up: rows_in={rows_in} but rows_written={written} + rows_failed={failed} "
                f"= {written + failed}. Nothing was committed to {output}."
            )
        if written != counted["rows_embedded"] + counted["rows_reused"]:
            raise CommitError(
                f"Row counts do not add up: rows_written={written} but rows_embedded={counted['rows_embedded']} + "
                f"rows_reused={counted['rows_reused']} = {counted['rows_embedded'] + counted['rows_reused']}. "
                f"Nothing was committed to {output}."
            )
        fraction = failed / rows_in if rows_in else 0.0
        if fraction > self._cfg.max_error_fraction:
            shown = "; ".join(f"{f.source} ({f.stage}): {f.error[:200]}" for f in examples)
            raise CommitError(
                f"{failed} of {rows_in} records failed ({fraction:.2%}), more than max_error_fraction="
                f"{self._cfg.max_error_fraction}; nothing was committed to {output}. Failures by stage: "
                f"{dict(sorted(failed_by_stage.items()))}. First failures: {shown}. All of them: "
                f"{FileSystems.join(tmp, ERRORS_DIR)}."
            )

    def _write_empty(self, tmp: str) -> PartFile:
        name = f"part-{uuid.uuid4().hex}.parquet"
        with FileSystems.create(FileSystems.join(tmp, name), compression_type=CompressionTypes.UNCOMPRESSED) as f:
            pq.write_table(self._schema.empty_table(), f)
        return PartFile(name, 0)

    def _move(self, tmp: str, subdir: str, parts: list[PartFile]) -> list[dict[str, Any]]:
        """Renames parts to `[subdir/]part-NNNNN-<run_id>.parquet` in the output; returns manifest entries."""
        parts = sorted(parts)
        names = [f"part-{i:05d}-{self._run_id}.parquet" for i in range(len(parts))]
        relative = [f"{subdir}/{n}" if subdir else n for n in names]
        target = FileSystems.join(self._cfg.output_dir, subdir) if subdir else self._cfg.output_dir
        sources = [FileSystems.join(tmp, subdir, p.name) if subdir else FileSystems.join(tmp, p.name) for p in parts]
        targets = [FileSystems.join(target, n) for n in names]
        pending = [(s, t) for s, t in zip(sources, targets) if FileSystems.exists(s) or not FileSystems.exists(t)]
        if pending:  # On a retried commit, parts already moved are skipped; a part in neither place fails.
            _mkdirs(target)
            FileSystems.rename([s for s, _ in pending], [t for _, t in pending])
        return [{"path": r, "rows": p.rows} for r, p in zip(relative, parts)]

    def _remove_own(self, tmp: str, moved: list[str]) -> None:
        """Deletes this run's temp directory and the parts it moved (a run that lost the output)."""
        try:
            existing = [path for path in moved if FileSystems.exists(path)]
            if existing:
                FileSystems.delete(existing)
            _delete_tree(tmp)
        except Exception as e:  # noqa: BLE001 - the conflict is what to report; leftovers are named by no manifest
            _LOG.warning("Could not remove this run's files under %s: %s", tmp, e)
        finally:
            if is_local(tmp):
                output_locks.release(normalize(tmp))

    def _remove_debris(self, output: str, tmp: str, manifest: dict[str, Any], replaced: StoredManifest | None) -> None:
        """Deletes this run's temp directory and what it left behind, and what no live run will need.

        Locally (under the commit lock): parts no manifest names, and the temp
        directories of runs that are provably gone (`output_locks.is_gone`).
        On `gs://` and `s3://`, where a run cannot be proven gone: the files of
        the table this commit replaced; other runs' files are left, and named
        in a warning. Best effort: the table is committed already.
        """
        try:
            if is_local(output):
                self._delete_local_debris(normalize(output), _manifest_paths(manifest))
            else:
                self._delete_remote_debris(output, tmp, manifest, replaced)
        except Exception as e:  # noqa: BLE001 - committed already; the next commit retries
            _LOG.warning("Committed %s, but could not remove leftovers: %s", output, e)
        finally:
            if is_local(tmp):
                output_locks.release(normalize(tmp))

    def _delete_local_debris(self, output: str, keep: set[str]) -> None:
        own = TMP_PREFIX + self._run_id
        for subdir in ("", ERRORS_DIR):
            folder = os.path.join(output, subdir)
            names = os.listdir(folder) if os.path.isdir(folder) else []
            for name in names:
                relative = f"{subdir}/{name}" if subdir else name
                if name.startswith("part-") and name.endswith(".parquet") and relative not in keep:
                    os.remove(os.path.join(folder, name))
        for name in sorted(os.listdir(output)):
            path = os.path.join(output, name)
            if not name.startswith(TMP_PREFIX):
                continue
            if os.path.islink(path) or not os.path.isdir(path):
                os.remove(path)  # not a run's directory: nothing of a run lives here
            elif name == own or output_locks.is_gone(path):
                shutil.rmtree(path)

    def _delete_remote_debris(
        self, output: str, tmp: str, manifest: dict[str, Any], replaced: StoredManifest | None
    ) -> None:
        _delete_tree(tmp)
        keep = _manifest_paths(manifest)
        old = _manifest_paths(replaced.manifest) - keep if replaced and replaced.manifest else set()
        if old:
            FileSystems.delete([FileSystems.join(output, path) for path in sorted(old)])
        others = (
            {
                _relative(m.path, output)
                for pattern in ("part-*.parquet", f"{ERRORS_DIR}/part-*.parquet", TMP_PREFIX + "*/**")
                for m in _match(output, pattern)
            }
            - keep
            - old
        )
        if others:
            _LOG.warning(
                "Committed %s; left %d files of other runs, which may still be running (e.g. %s): remove them "
                "once no run writes to this output.",
                redact(output),
                len(others),
                sorted(others)[0],
            )


@contextlib.contextmanager
def _locked(output: str) -> Iterator[None]:
    """The output's commit lock when it is local; on gs:// and s3:// the manifest's conditional write guards it."""
    if is_local(output):
        with output_locks.commit_lock(normalize(output)):
            yield
    else:
        yield


def _manifest_paths(manifest: dict[str, Any]) -> set[str]:
    return {f["path"] for f in manifest.get("files", []) + manifest.get("error_files", [])}


def _delete_tree(path: str) -> None:
    """Deletes a directory and everything under it (Beam's local delete keeps directories)."""
    if is_local(path):
        shutil.rmtree(normalize(path), ignore_errors=True)
    elif FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list:
        FileSystems.delete([path.rstrip("/") + "/"])


def _match(output: str, pattern: str) -> list[Any]:
    return FileSystems.match([FileSystems.join(output, pattern)])[0].metadata_list


def _relative(path: str, output: str) -> str:
    return os.path.relpath(path, output).replace(os.sep, "/")


def _mkdirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except OSError:  # Beam's local file system refuses to create an existing directory.
        if not FileSystems.exists(path):
            raise
