"""WriteEmbeddingTable: embedded records and failures -> Parquet parts, committed atomically under `_SUCCESS`.

Readers read the parts the manifest names (`read_table`). The commit itself is
`commit.Commit`; the directory layout and why the commit is safe:
docs/design/embedding.md.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from pipelines.embedding.commit import Commit, PartFile, seen_table
from pipelines.embedding.config import ERRORS_DIR, SUCCESS_FILE, TMP_PREFIX, SinkConfig
from pipelines.embedding.records import METRICS_NAMESPACE, Failure, Record

METADATA_KEY = "hub_embed"
ROWS_PER_BATCH = 4096
PART_BYTES = 64 << 20
ERROR_SCHEMA = pa.schema([(name, pa.string()) for name in Failure._fields])


class SeenAtBuild:
    """`WriteEmbeddingTable(replaces=...)` left out: the table the output holds when the graph is built."""


SEEN_AT_BUILD = SeenAtBuild()


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


class WriteEmbeddingTable(beam.PTransform):
    """Writes embedded records and failures as a table, then commits it (see the module docstring).

    Input: a dict with `records` (embedded `Record`s: a PCollection, or a tuple
    of them, each written by a writer of its own), `failures` (`Failure`s),
    and `tallies` (`(name, n)` pairs, summed per name: `rows_in`, the records
    read, must equal the rows written plus the dead letters, and `rows_embedded`
    and `rows_reused` must add up to the rows written; see `commit.TALLY_NAMES`).

    The run may replace only the table `replaces` names, or else the one its
    output holds when the graph is built, and that only with `overwrite` (see
    `commit.seen_table`).

    Returns:
      A PCollection with the committed manifest (one dict).
    """

    def __init__(
        self,
        cfg: SinkConfig,
        run_id: str,
        schema: pa.Schema,
        manifest: dict[str, Any],
        replaces: str | None | SeenAtBuild = SEEN_AT_BUILD,
    ):
        """Initializes the transform.

        Args:
          cfg: output directory and error budget.
          run_id: this run's id (see `new_run_id`).
          schema: the table schema (see `table_schema`).
          manifest: what `_SUCCESS` records besides counts and files: at least
            `table` (the `hub_embed` metadata) and `config`.
          replaces: the run id of the committed table this run may replace
            (None: none); by default the one `commit.seen_table` reads when the
            graph is built.
        """
        super().__init__()
        self._cfg = cfg
        self._run_id = run_id
        self._schema = schema
        self._manifest = manifest
        self._replaces = replaces

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        replaces = seen_table(self._cfg) if isinstance(self._replaces, SeenAtBuild) else self._replaces
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
                Commit(self._cfg, self._run_id, self._schema, self._manifest, replaces),
                beam.pvalue.AsList(parts),
                beam.pvalue.AsList(error_parts),
                beam.pvalue.AsDict(by_stage),
                beam.pvalue.AsSingleton(examples),
                beam.pvalue.AsDict(tallies),
            )
        )
