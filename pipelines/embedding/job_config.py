"""The embedding job's config as data: its frozen dataclasses, input formats, and the table's file names."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
from typing import Any

from pipelines.embedding.publish_section import PublishSection
from pipelines.hub.flags import HELP as HUB_HELP
from pipelines.hub.limits import DEFAULT_LIMITS, Limits
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import ResolveOptions

FORMATS = ("txt", "jsonl", "csv", "parquet", "tfrecord", "image")
_EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".jpg": "image",
    ".jpeg": "image",
    ".png": "image",
}
DEFAULT_MODULE = "build/modules/all-minilm-l6-v2/1"
SAMPLE_INPUT = str(importlib.resources.files("pipelines.data") / "sample.txt")
SAMPLE_OUTPUT = "output/sample"
DEFAULT_BATCH_SIZE = {"text": 256, "image": 32}
TABLE_COLUMNS = ("id", "embedding", "content_hash")
SUCCESS_FILE = "_SUCCESS"
# The table's HTML report, written beside it after its commit (`pipelines.report`; readers skip `_` files).
REPORT_FILE = "_report.html"
ERRORS_DIR = "errors"
TMP_PREFIX = ".tmp-"
# The output's commit lock, held while a run commits (see `output_locks.commit_lock`); removed by its holder.
COMMIT_LOCK = ".commit.lock"


def _option(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where records come from and how they are read."""

    input: str = _option(SAMPLE_INPUT, "input file or glob (local, gs://, s3://); default: the bundled sample")
    input_format: str | None = _option(None, f"one of {', '.join(FORMATS)}; default: from the input's extension")
    text_field: str = _option("text", "field holding the text (jsonl, csv, parquet, tfrecord)")
    id_field: str | None = _option(None, "field holding the record id; default: <file>:<line or record number>")
    passthrough: tuple[str, ...] = _option((), "fields copied to the output table, comma-separated")

    @property
    def kind(self) -> str:
        """ "image" for image sets, else "text"."""
        return "image" if self.input_format == "image" else "text"


# Settings that change how fast a run goes, not what it writes (left out of `config_hash`).
SPEED_KEYS = frozenset({"decode_threads"})
# Where a setting came from, not what it is (left out of `config_hash`).
SOURCE_KEYS = frozenset({"module_from_env"})
# Which of the module's ops may run: a decision about trust, not about what the module computes (left out of
# `config_hash`).
GATE_KEYS = frozenset({"allow_ops", "trust_module"})
# How far fetching the module is trusted, not what the module computes (left out of `config_hash`).
FETCH_KEYS = frozenset({field.name for field in dataclasses.fields(Limits)} | {"allow_insecure_http", "verify_cache"})


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Limits and shapes applied before the module sees a record."""

    image_size: tuple[int, int] | None = _option(
        None, "HEIGHT,WIDTH to resize images to when the module's input size is open"
    )
    max_text_bytes: int = _option(1 << 20, "longer texts (UTF-8 bytes) are dead-lettered")
    max_image_pixels: int = _option(50_000_000, "larger images are dead-lettered (decompression-bomb guard)")
    decode_threads: int | None = _option(
        None,
        "images decoded side by side per worker process (in one process, module calls side by side, "
        "each decoding its own images); default: the process's share of the cores",
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which module, signature and output embed the records, and how far fetching the module is trusted."""

    module: str = _option(DEFAULT_MODULE, "module handle: directory, .tar.gz, file://, http(s)://, gs://, s3://")
    module_from_env: str | None = _option(
        None,
        "name of an environment variable holding the module handle, read instead of module: keeps a handle with "
        "credentials (user:password@, ?token=) off command lines and out of config files",
    )
    signature: str = _option("default", "signature to call")
    output_key: str = _option("default", "output of the signature to store")
    output_length_key: str | None = _option(
        None,
        "for a per-token output [N, T, D]: the signature's output holding each row's token count (int [N]) or "
        "mask (int/bool [N, T]); default: found by its shape (see inspect)",
    )
    batch_size: int | None = _option(
        None,
        "rows per module call; default: the module's recommendation (module.json serving.batch_size), "
        f"else {DEFAULT_BATCH_SIZE['text']} texts, {DEFAULT_BATCH_SIZE['image']} images",
    )
    allow_ops: tuple[str, ...] = _option(
        (),
        "TensorFlow ops the op gate lets the module run although they read or write files, list directories, run "
        "Python or reach the network (comma-separated, e.g. ReadFile,WriteFile); only for a module you trust",
    )
    trust_module: bool = _option(
        False, "run the module whatever ops it holds (the op gate still records them in the manifest)"
    )
    max_download_bytes: int = _option(DEFAULT_LIMITS.max_download_bytes, HUB_HELP["max_download_bytes"])
    max_unpacked_bytes: int = _option(DEFAULT_LIMITS.max_unpacked_bytes, HUB_HELP["max_unpacked_bytes"])
    max_archive_members: int = _option(DEFAULT_LIMITS.max_archive_members, HUB_HELP["max_archive_members"])
    max_member_path_length: int = _option(DEFAULT_LIMITS.max_member_path_length, HUB_HELP["max_member_path_length"])
    max_compression_ratio: float = _option(DEFAULT_LIMITS.max_compression_ratio, HUB_HELP["max_compression_ratio"])
    allow_insecure_http: bool = _option(False, HUB_HELP["allow_insecure_http"])
    verify_cache: bool = _option(False, HUB_HELP["verify_cache"])

    def resolve_options(self) -> ResolveOptions:
        """The limits and trust `pipelines.hub.registry.resolve` applies to this job's module."""
        limits = Limits(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Limits)})
        return ResolveOptions(limits, allow_insecure_http=self.allow_insecure_http, verify_cache=self.verify_cache)


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    """Where the table goes, when a run counts as failed, and which earlier table it may reuse vectors from."""

    output: str | None = _option(
        None, f"output directory; default with the sample input: {SAMPLE_OUTPUT} (replaced on every run)"
    )
    overwrite: bool = _option(False, "replace a table already committed at --output")
    max_error_fraction: float = _option(0.01, "fail the run (no _SUCCESS) when more records than this fail")
    reuse: str | None = _option(
        None,
        "a committed table (local, gs://, s3://) whose vectors this run takes for unchanged contents instead of "
        "computing them; used only when it was written with the same module, signature, output and preprocessing",
    )
    report: bool = _option(
        True,
        "after the commit, write the table's HTML report to OUTPUT/_report.html (a sample's map, near-duplicates, "
        "neighbours, dead letters); a report that fails is a warning, the table stays committed",
    )
    report_compare: str | None = _option(
        None, "a committed table (e.g. the previous module version's) the report compares this one with"
    )
    report_color_by: str | None = _option(None, "the passthrough column colouring the report's map")

    @property
    def output_dir(self) -> str:
        """`output` of a validated config, which always sets it (see `load`, `from_dict`)."""
        if self.output is None:
            raise ValueError(
                "SinkConfig.output is unset: the config was not validated (config.load, config.from_dict)."
            )
        return self.output


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """A validated embedding job.

    Attributes:
      source: input files and how to read them.
      preprocess: text/image limits and image size.
      model: module handle, signature, output key, batch size.
      sink: output directory, overwrite, error budget.
      beam_args: Beam pipeline options, as command-line flags.
      publish: the collection the committed table is published into, if any (not part of `to_dict`).
    """

    source: SourceConfig = SourceConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    sink: SinkConfig = SinkConfig()
    beam_args: tuple[str, ...] = ()
    publish: PublishSection | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat key -> value view (YAML keys), with secrets dropped from the module handle."""
        flat: dict[str, Any] = {}
        for group in SECTIONS:
            for field in dataclasses.fields(group):
                value = getattr(getattr(self, SECTIONS[group]), field.name)
                flat[field.name] = list(value) if isinstance(value, tuple) else value
        flat["module"] = redact(flat["module"])
        return flat

    def config_hash(self) -> str:
        """`sha256:<hex>` of everything that decides the table's content (not where it goes, nor how fast)."""
        skipped = {f.name for f in dataclasses.fields(SinkConfig)} | SPEED_KEYS | SOURCE_KEYS | FETCH_KEYS | GATE_KEYS
        content = {k: v for k, v in self.to_dict().items() if k not in skipped}
        return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# Each part of a job and its attribute of `EmbedConfig`; the YAML file and the flags are flat (one key per field).
SECTIONS = {SourceConfig: "source", PreprocessConfig: "preprocess", ModelConfig: "model", SinkConfig: "sink"}


def infer_format(path: str) -> str | None:
    """The input format an input path's extension implies (compression suffixes skipped), or None."""
    from apache_beam.io.filesystem import CompressionTypes  # Beam: heavy, and the DAGs import this module

    root, ext = os.path.splitext(path.lower())
    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
        ext = os.path.splitext(root)[1]
    return _EXTENSIONS.get(ext)
