"""Input formats: files matching the input glob -> `Record`s, and `Failure`s for what cannot be read.

One reader (a DoFn over a matched file) per format; `DedupeIds` keeps the first
record of each id. The rules per format: docs/design/embedding.md.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.tfrecordio import _TFRecordUtil
from google.protobuf.message import DecodeError

from pipelines.embedding.config import SourceConfig
from pipelines.embedding.paths import is_local
from pipelines.embedding.records import FAILURES, TALLIES, Record, Stage, failed, position, tally

_MISSING = object()


def _lines(f: Any) -> Iterator[bytes]:
    """Yields the UTF-8 lines of a text file's binary stream without their `\\n` / `\\r\\n`.

    A UTF-8 byte-order mark at the start is dropped (Excel and Notepad write
    one). A file starting with a UTF-16 byte-order mark is decoded as UTF-16
    and its lines re-encoded as UTF-8: split as bytes, its lines would be
    garbage that happens to be valid UTF-8 (every other byte NUL).
    """
    first = f.readline()
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not first.startswith(codecs.BOM_UTF32_LE):
        yield from _utf16_lines(first, f)
        return
    line = first.removeprefix(codecs.BOM_UTF8)
    while line:
        yield line.rstrip(b"\n").removesuffix(b"\r") if line.endswith(b"\n") else line
        line = f.readline()


def _utf16_lines(head: bytes, f: Any) -> Iterator[bytes]:
    """The lines of a UTF-16 stream (BOM first, `head` already read from it) as UTF-8 bytes."""
    decoder = codecs.getincrementaldecoder("utf-16")()  # strict: broken UTF-16 makes the rest of the file unreadable
    pending = ""
    chunk = head
    while chunk:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line.removesuffix("\r").encode("utf-8")
        chunk = f.read(1 << 16)
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.encode("utf-8")


def passthrough_value(value: Any) -> str | None:
    """A passthrough value as the string stored in the table (None stays null)."""
    if value is None or value is _MISSING:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (bool, int, float, list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class _ReadFile(beam.DoFn):
    """Reads one matched file into records; subclasses implement `parse`."""

    def __init__(self, cfg: SourceConfig):
        self._cfg = cfg

    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        """Yields the `Record`s and tagged failures of one file."""
        raise NotImplementedError

    def process(self, readable_file: fileio.ReadableFile) -> Iterator[Any]:
        path = readable_file.metadata.path
        if is_local(path) and os.path.isdir(path):
            return
        count = 0
        try:
            for item in self.parse(path, readable_file):
                count += 1
                yield item
        except Exception as e:  # An unreadable file is a dead letter, not a crashed run.
            count += 1
            yield failed(path, path, Stage.READ, f"file unreadable after {count - 1} records: {type(e).__name__}: {e}")
        yield tally("rows_in", count)


class _ReadFields(_ReadFile):
    """Base of the formats whose records have named fields."""

    def __init__(self, cfg: SourceConfig):
        super().__init__(cfg)
        self._columns = tuple(dict.fromkeys((cfg.text_field, cfg.id_field or cfg.text_field, *cfg.passthrough)))

    def record(self, source: str, get: Callable[[str], Any]) -> Any:
        """Builds the record from a field getter (`_MISSING` for absent fields), or a failure."""
        record_id = source
        if self._cfg.id_field:
            value = get(self._cfg.id_field)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "backslashreplace")
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value:
                problem = (
                    "is missing"
                    if value is _MISSING
                    else "is empty"
                    if value == ""
                    else f"is {_kind(value)}, not a string or integer"
                )
                return failed(source, source, Stage.READ, f"id field {self._cfg.id_field!r} {problem}")
            if not _valid_utf8(value):
                return failed(source, source, Stage.READ, f"id field {self._cfg.id_field!r} {_NOT_UNICODE}")
            record_id = value
        text = get(self._cfg.text_field)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                return failed(record_id, source, Stage.READ, f"text field {self._cfg.text_field!r}: {e}")
        if not isinstance(text, str):
            problem = "is missing" if text is _MISSING else f"is {_kind(text)}, not a string"
            return failed(record_id, source, Stage.READ, f"text field {self._cfg.text_field!r} {problem}")
        if not _valid_utf8(text):
            return failed(record_id, source, Stage.READ, f"text field {self._cfg.text_field!r} {_NOT_UNICODE}")
        passthrough = tuple(passthrough_value(get(name)) for name in self._cfg.passthrough)
        for name, value in zip(self._cfg.passthrough, passthrough):
            if value is not None and not _valid_utf8(value):
                return failed(record_id, source, Stage.READ, f"passthrough field {name!r} {_NOT_UNICODE}")
        return Record(record_id, text, source, passthrough)


# JSON escapes can spell lone surrogates (`"\\ud83d"`: half an emoji, cut by a truncating tool). They are
# not text: no UTF-8 encoding exists, so a coder, the module or the Parquet writer would fail the whole run.
_NOT_UNICODE = "is not valid Unicode: it holds a lone surrogate (e.g. a \\ud83d escape without its pair)"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _ReadTxt(_ReadFile):
    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        with file.open() as f:
            for n, line in enumerate(_lines(f), 1):
                source = f"{path}:{n}"
                try:
                    yield Record(source, line.decode("utf-8"), source)
                except UnicodeDecodeError as e:
                    yield failed(source, source, Stage.READ, e)


class _ReadJsonl(_ReadFields):
    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        with file.open() as f:
            for n, line in enumerate(_lines(f), 1):
                if not line.strip():
                    continue
                source = f"{path}:{n}"
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, nesting too deep
                    yield failed(source, source, Stage.READ, f"not a JSON line: {type(e).__name__}: {e}")
                    continue
                if not isinstance(obj, dict):
                    yield failed(source, source, Stage.READ, f"JSON line is {_kind(obj)}, not an object")
                    continue
                yield self.record(source, lambda name: obj.get(name, _MISSING))


class _ReadCsv(_ReadFields):
    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        with file.open() as f:
            yield from self._rows(path, f)

    def _rows(self, path: str, f: Any) -> Iterator[Any]:
        # Texts are bounded by max_text_bytes later, not by the csv module's 128 KiB field limit.
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
        # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
        reader = csv.reader(line.decode("utf-8", "surrogateescape") + "\n" for line in _lines(f))
        header = next(reader, None)
        if header is None:
            return
        missing = [c for c in self._columns if c not in header]
        if missing:
            yield failed(path, path, Stage.READ, f"no column {missing[0]!r}; columns: {header}")
            return
        index = {name: header.index(name) for name in self._columns}
        n = 0
        while True:
            n += 1
            source = f"{path}:{n}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield failed(source, source, Stage.READ, f"bad CSV row: {e}")
                continue
            if len(row) != len(header):
                yield failed(source, source, Stage.READ, f"row has {len(row)} fields, the header has {len(header)}")
                continue
            values = [row[index[name]] for name in self._columns]
            if not all(_valid_utf8(v) for v in values):
                yield failed(source, source, Stage.READ, "invalid UTF-8 in the row")
                continue
            yield self.record(source, lambda name: row[index[name]])


def _valid_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (from JSON escapes, or bytes decoded with surrogateescape)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _ReadParquet(_ReadFields):
    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        with file.open(compression_type=CompressionTypes.UNCOMPRESSED) as f:
            yield from self._rows(path, f)

    def _rows(self, path: str, f: Any) -> Iterator[Any]:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        missing = [c for c in self._columns if c not in names]
        if missing:
            yield failed(path, path, Stage.READ, f"no column {missing[0]!r}; columns: {names}")
            return
        n = 0
        batches = parquet.iter_batches(batch_size=4096, columns=list(self._columns))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # A corrupt row group: the rest of the file is lost.
                yield failed(f"{path}:{n + 1}", f"{path}:{n + 1}", Stage.READ, f"corrupt from record {n + 1} on: {e}")
                return
            columns = {name: batch.column(name).to_pylist() for name in self._columns}
            for i in range(batch.num_rows):
                n += 1
                yield self.record(f"{path}:{n}", lambda name: columns[name][i])


class _ReadTfRecord(_ReadFields):
    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        with file.open() as f:
            yield from self._records(path, f)

    def _records(self, path: str, f: Any) -> Iterator[Any]:
        from tensorflow.core.example import example_pb2  # imports TensorFlow: only tfrecord inputs pay it

        n = 0
        while True:
            try:
                data = _TFRecordUtil.read_record(f)
            except ValueError as e:  # Framing is lost: the rest of the file cannot be split into records.
                yield failed(f"{path}:{n + 1}", f"{path}:{n + 1}", Stage.READ, f"corrupt from record {n + 1} on: {e}")
                return
            if data is None:
                return
            n += 1
            source = f"{path}:{n}"
            try:
                features = example_pb2.Example.FromString(data).features.feature
            except DecodeError as e:
                yield failed(source, source, Stage.READ, f"not a tf.train.Example: {e}")
                continue
            yield self.record(source, lambda name: _feature_value(features, name))


def _feature_value(features: Any, name: str) -> Any:
    """A `tf.train.Feature` as Python: one value as a scalar, several as a list, none as None."""
    if name not in features:
        return _MISSING
    feature = features[name]
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    return values[0] if len(values) == 1 else (values or None)


class _ReadImagePaths(_ReadFile):
    def parse(self, path: str, file: fileio.ReadableFile) -> Iterator[Any]:
        yield Record(path, path, path)  # Opened and decoded by preprocess, after the records are spread out.


READERS: dict[str, type[_ReadFile]] = {
    "txt": _ReadTxt,
    "jsonl": _ReadJsonl,
    "csv": _ReadCsv,
    "parquet": _ReadParquet,
    "tfrecord": _ReadTfRecord,
    "image": _ReadImagePaths,
}


class ReadRecords(beam.PTransform):
    """Matches the input glob and reads every file with its format's reader.

    Returns:
      A `DoOutputsTuple`: `.records` (`Record`s), `.failures` (`Failure`s) and
      `.tallies` (`rows_in`: records and failures read, per file).
    """

    def __init__(self, cfg: SourceConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        assert self._cfg.input_format is not None  # validation sets it (from the extension when not given)
        reader = READERS[self._cfg.input_format](self._cfg)
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._cfg.input)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches()
            | "Parse" >> beam.ParDo(reader).with_outputs(FAILURES, TALLIES, main="records")
        )


class _KeepFirst(beam.DoFn):
    def process(self, element: tuple[str, Iterable[Record]]) -> Iterator[Any]:
        _, records = element
        records = sorted(records, key=position)
        yield records[0]
        for record in records[1:]:
            yield failed(
                record.id, record.source, Stage.DEDUPE, f"duplicate id; the record at {records[0].source} is kept"
            )


class DedupeIds(beam.PTransform):
    """Keeps one record per id: the first by file path, then position. The others fail (stage `dedupe`).

    The grouping by id is also what spreads records evenly over workers
    before preprocessing and inference.

    Returns:
      A `DoOutputsTuple`: `.records` and `.failures`.
    """

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            records
            | "ById" >> beam.Map(lambda r: (r.id, r))
            | "Group" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(_KeepFirst()).with_outputs(FAILURES, main="records")
        )
