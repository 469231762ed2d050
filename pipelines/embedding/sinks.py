"""WriteEmbeddingTable: embedded records and failures -> Parquet parts, committed atomically under `_SUCCESS`.

Readers read the parts the manifest names (`read_table`). The directory layout
and why the commit is safe: docs/design/embedding.md.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from pipelines.embedding.config import ERRORS_DIR, SUCCESS_FILE, TMP_PREFIX, SinkConfig
from pipelines.embedding.paths import is_local
from pipelines.embedding.records import METRICS_NAMESPACE, Failure, Record

METADATA_KEY = "hub_embed"
MANIFEST_FORMAT = "hub-embed-table/1"
ROWS_PER_BATCH = 4096
PART_BYTES = 64 << 20
# Counts the pipeline tallies where rows get their vectors (see `records.tally`), recorded in the manifest.
TALLY_NAMES = ("rows_embedded", "rows_reused", "rows_deduplicated", "contents_embedded")
ERROR_SCHEMA = pa.schema([(name, pa.string()) for name in Failure._fields])
_LOG = logging.getLogger(__name__)


class CommitError(RuntimeError):
    """The run cannot be committed: counts do not add up, or too many records failed."""


class PartFile(NamedTuple):
    """A written part: its path relative to the run's temp dir, and its row count."""

    name: str
    rows: int


def new_run_id() -> str:
    """A sortable, unique run id: UTC time + random suffix."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def table_schema(dim: int, sequence: bool, passthrough: Sequence[str], metadata: dict[str, Any]) -> pa.Schema:
    """The table's Arrow schema, with `metadata` under the `hub_embed` key."""
    vector = pa.list_(pa.float32(), dim)
    fields = [
        ("id", pa.string()),
        ("embedding", pa.list_(vector) if sequence else vector),
        ("content_hash", pa.string()),
    ]
    fields += [(name, pa.string()) for name in passthrough]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def _flat_vectors(payloads: list[Any]) -> np.ndarray:
    """The payloads' float32 values, one after the other (arrays, or the raw bytes of reused vectors)."""
    if payloads and all(isinstance(p, bytes) for p in payloads):
        return np.frombuffer(b"".join(payloads), np.float32)
    arrays = [
        np.frombuffer(p, np.float32) if isinstance(p, bytes) else np.asarray(p, np.float32).reshape(-1)
        for p in payloads
    ]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.float32)


def _table_batch(schema: pa.Schema, rows: list[Record]) -> pa.RecordBatch:
    """Embedded records as a record batch.

    A payload is a float32 `[D]` or `[T, D]` array, or the bytes of one in
    row-major order (how reused vectors travel: bytes cost Beam's coders a
    copy, arrays a pickle).
    """
    embedding_type = schema.field("embedding").type
    payloads = [r.payload for r in rows]
    if pa.types.is_fixed_size_list(embedding_type):
        dim = embedding_type.list_size
        embeddings: pa.Array = pa.FixedSizeListArray.from_arrays(pa.array(_flat_vectors(payloads), pa.float32()), dim)
    else:
        dim = embedding_type.value_type.list_size
        offsets = np.zeros(len(rows) + 1, np.int32)
        np.cumsum([len(p) // (4 * dim) if isinstance(p, bytes) else len(p) for p in payloads], out=offsets[1:])
        flat = _flat_vectors(payloads)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
        embeddings = pa.ListArray.from_arrays(pa.array(offsets), vectors)
    columns = [
        pa.array([r.id for r in rows], pa.string()),
        embeddings,
        pa.array([r.content_hash for r in rows], pa.string()),
    ]
    columns += [pa.array([r.passthrough[k] for r in rows], pa.string()) for k in range(len(schema.names) - 3)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _error_batch(schema: pa.Schema, rows: list[Failure]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(column, pa.string()) for column in zip(*rows)], schema=schema)


class _OpenPart:
    """A part file being written: Arrow batches go into it as Parquet row groups.

    A write or close that fails (e.g. a full disk) closes the file before the
    error goes on: an incomplete part is never left open, and no manifest
    names it, so the next commit to the output removes it.
    """

    def __init__(self, tmp_dir: str, schema: pa.Schema):
        self.name = f"part-{uuid.uuid4().hex}.parquet"
        self.rows = 0
        self.bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._file = FileSystems.create(
            FileSystems.join(tmp_dir, self.name), compression_type=CompressionTypes.UNCOMPRESSED
        )
        with self._closed_on_error():
            # No dictionary for the vectors: they hardly repeat, and trying one per page costs 3x the write.
            self._writer = pq.ParquetWriter(
                self._file, schema, use_dictionary=[n for n in schema.names if n != "embedding"]
            )

    def write(self, batch: pa.RecordBatch) -> None:
        assert self._writer is not None  # set in __init__, which raised otherwise
        with self._closed_on_error():
            self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes

    def close(self) -> PartFile:
        assert self._writer is not None  # set in __init__, which raised otherwise
        with self._closed_on_error():
            self._writer.close()
            self._file.close()
        return PartFile(self.name, self.rows)

    def abort(self) -> None:
        """Closes the file without finishing it (after a failure)."""
        closers = ([self._writer.close] if self._writer else []) + [self._file.close]
        for close in closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - the failure that led here is the one to report
                pass

    @contextlib.contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.abort()
            raise


class _WriteParts(beam.DoFn):
    """Writes rows into parts of about `PART_BYTES`, `ROWS_PER_BATCH` rows (one row group) at a time."""

    def __init__(
        self, tmp_dir: str, schema: pa.Schema, to_batch: Callable[[pa.Schema, list], pa.RecordBatch], counter: str
    ):
        self._tmp_dir = tmp_dir
        self._schema = schema
        self._to_batch = to_batch
        self._counter = counter

    def setup(self) -> None:
        self._rows_counter = beam.metrics.Metrics.counter(METRICS_NAMESPACE, self._counter)
        self._part: _OpenPart | None = None

    def start_bundle(self) -> None:
        self._abort_part()  # left open by a bundle that failed
        self._rows: list = []

    def teardown(self) -> None:
        self._abort_part()

    def process(self, row: Any) -> Iterator[PartFile]:
        self._rows.append(row)
        if len(self._rows) >= ROWS_PER_BATCH:
            self._write_rows()
            if self._part is not None and self._part.bytes >= PART_BYTES:
                yield self._close_part()

    def finish_bundle(self) -> Iterator[Any]:
        self._write_rows()
        if self._part is not None:
            yield GlobalWindows.windowed_value(self._close_part())

    def _write_rows(self) -> None:
        if not self._rows:
            return
        batch = self._to_batch(self._schema, self._rows)
        self._count(self._rows)
        self._rows = []
        if self._part is None:
            self._part = _OpenPart(self._tmp_dir, self._schema)
        self._part.write(batch)

    def _count(self, rows: list) -> None:
        self._rows_counter.inc(len(rows))

    def _close_part(self) -> PartFile:
        part, self._part = self._part, None
        assert part is not None  # called only with a part open
        return part.close()

    def _abort_part(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            part.abort()


class _WriteErrorParts(_WriteParts):
    """Also counts failures per stage (`rows_failed_<stage>`)."""

    def _count(self, rows: list) -> None:
        super()._count(rows)
        for stage, n in collections.Counter(r.stage for r in rows).items():
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"rows_failed_{stage}").inc(n)


def read_table_manifest(output: str) -> dict[str, Any] | None:
    """The committed manifest of an output directory, or None when it holds no committed table."""
    path = FileSystems.join(output, SUCCESS_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read())


def _read_files(output: str, names: Iterable[str], schema: pa.Schema | None = None) -> pa.Table:
    tables = []
    for name in names:
        with FileSystems.open(FileSystems.join(output, name), compression_type=CompressionTypes.UNCOMPRESSED) as f:
            tables.append(pq.read_table(f))
    if not tables and schema is not None:
        return schema.empty_table()
    return pa.concat_tables(tables, promote_options="none")


def read_table(output: str) -> pa.Table:
    """Reads the committed embedding table (the parts `_SUCCESS` names).

    Raises:
      FileNotFoundError: the directory holds no committed table.
    """
    manifest = read_table_manifest(output)
    if manifest is None:
        raise FileNotFoundError(f"{output} holds no committed table (no {SUCCESS_FILE}).")
    return _read_files(output, [f["path"] for f in manifest["files"]])


def read_errors(output: str) -> pa.Table:
    """Reads the committed dead-letter table (id, source, stage, error)."""
    manifest = read_table_manifest(output)
    if manifest is None:
        raise FileNotFoundError(f"{output} holds no committed table (no {SUCCESS_FILE}).")
    return _read_files(output, [f["path"] for f in manifest["error_files"]], ERROR_SCHEMA)


class _Commit(beam.DoFn):
    """Checks the counts, moves the run's parts into place and writes `_SUCCESS` (see the module docstring)."""

    def __init__(self, cfg: SinkConfig, run_id: str, schema: pa.Schema, manifest: dict[str, Any]):
        self._cfg = cfg
        self._run_id = run_id
        self._schema = schema
        self._manifest = {"format": MANIFEST_FORMAT, "run_id": run_id, **manifest}

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
        committed = read_table_manifest(output)
        if committed and committed.get("run_id") == self._run_id:  # A retry of a commit that got this far.
            self._remove_debris(output, _manifest_paths(committed))
            yield committed
            return
        rows_in = int(tallies.get("rows_in", 0))
        written = sum(p.rows for p in parts)
        failed = sum(p.rows for p in error_parts)
        counted = {name: int(tallies.get(name, 0)) for name in TALLY_NAMES}
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
        if not parts:  # An empty table still has its schema.
            parts = [self._write_empty(tmp)]
        files = self._move(tmp, "", parts)
        error_files = self._move(tmp, ERRORS_DIR, error_parts)
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
        staged = FileSystems.join(tmp, SUCCESS_FILE)
        with FileSystems.create(staged, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True).encode())
        FileSystems.rename([staged], [FileSystems.join(output, SUCCESS_FILE)])
        self._remove_debris(output, _manifest_paths(manifest))
        yield manifest

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

    def _remove_debris(self, output: str, keep: set[str]) -> None:
        """Deletes parts no manifest names and every `.tmp-*` directory (this run's included).

        Best effort: the table is committed already, and the next commit retries.
        """
        try:
            self._delete_debris(output, keep)
        except Exception as e:  # pylint: disable=broad-except
            _LOG.warning("Committed %s, but could not remove leftovers: %s", output, e)

    def _delete_debris(self, output: str, keep: set[str]) -> None:
        stale = [
            m.path
            for pattern in ("part-*.parquet", f"{ERRORS_DIR}/part-*.parquet")
            for m in _match(output, pattern)
            if _relative(m.path, output) not in keep
        ]
        # Matches list files only: directories left empty are found by listing where there are directories.
        tmp_names = {_relative(m.path, output).split("/")[0] for m in _match(output, TMP_PREFIX + "*/**")}
        if is_local(output):
            tmp_names.update(name for name in os.listdir(output) if name.startswith(TMP_PREFIX))
        if stale:
            FileSystems.delete(stale)
        for name in sorted(tmp_names):
            _delete_tree(FileSystems.join(output, name))


def _manifest_paths(manifest: dict[str, Any]) -> set[str]:
    return {f["path"] for f in manifest["files"] + manifest["error_files"]}


def _delete_tree(path: str) -> None:
    """Deletes a directory and everything under it (Beam's local delete keeps directories)."""
    if is_local(path):
        shutil.rmtree(path)
    else:
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


class WriteEmbeddingTable(beam.PTransform):
    """Writes embedded records and failures as a table, then commits it (see the module docstring).

    Input: a dict with `records` (embedded `Record`s: a PCollection, or a tuple
    of them, each written by a writer of its own), `failures` (`Failure`s),
    and `tallies` (`(name, n)` pairs, summed per name: `rows_in`, the records
    read, must equal the rows written plus the dead letters, and `rows_embedded`
    and `rows_reused` must add up to the rows written; see `TALLY_NAMES`).

    Returns:
      A PCollection with the committed manifest (one dict).
    """

    def __init__(self, cfg: SinkConfig, run_id: str, schema: pa.Schema, manifest: dict[str, Any]):
        """Initializes the transform.

        Args:
          cfg: output directory and error budget.
          run_id: this run's id (see `new_run_id`).
          schema: the table schema (see `table_schema`).
          manifest: what `_SUCCESS` records besides counts and files: at least
            `table` (the `hub_embed` metadata) and `config`.
        """
        super().__init__()
        self._cfg = cfg
        self._run_id = run_id
        self._schema = schema
        self._manifest = manifest

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        tmp = FileSystems.join(self._cfg.output_dir, TMP_PREFIX + self._run_id)
        streams = inputs["records"] if isinstance(inputs["records"], tuple) else (inputs["records"],)
        # One writer per stream, not one behind a Flatten: the runner can then fuse each writer with the
        # step that makes its rows, and rows are not encoded once more on the way to the writer.
        parts = [
            stream | f"WriteParts{i or ''}" >> beam.ParDo(_WriteParts(tmp, self._schema, _table_batch, "rows_written"))
            for i, stream in enumerate(streams)
        ]
        parts = parts | "AllParts" >> beam.Flatten()
        failures = inputs["failures"]
        error_parts = failures | "WriteErrorParts" >> beam.ParDo(
            _WriteErrorParts(FileSystems.join(tmp, ERRORS_DIR), ERROR_SCHEMA, _error_batch, "rows_failed")
        )
        by_stage = (
            failures | "StageOf" >> beam.Map(lambda f: f.stage) | "CountByStage" >> beam.combiners.Count.PerElement()
        )
        examples = failures | "FirstFailures" >> beam.combiners.Top.Smallest(3)
        tallies = inputs["tallies"] | "SumTallies" >> beam.CombinePerKey(sum)
        return (
            inputs["tallies"].pipeline
            | "CommitTrigger" >> beam.Create([None])
            | "Commit"
            >> beam.ParDo(
                _Commit(self._cfg, self._run_id, self._schema, self._manifest),
                beam.pvalue.AsList(parts),
                beam.pvalue.AsList(error_parts),
                beam.pvalue.AsDict(by_stage),
                beam.pvalue.AsSingleton(examples),
                beam.pvalue.AsDict(tallies),
            )
        )
