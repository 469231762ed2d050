"""`prepare(cfg)` settles a run at launch; `build_pipeline(p, cfg)` wires the embedding job's graph.

Step labels are stable (tests and Dataflow job updates rely on them): `Read`,
`DedupeIds`, `Preprocess`, `ReadReuse`, `JoinContent`, `Decode`, `Embed`,
`AllFailures`, `AllTallies`, `WriteTable`. The graph: docs/design/embedding.md.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle

from pipelines.embedding import content, model_spec, reuse, sinks
from pipelines.embedding.config import EmbedConfig
from pipelines.embedding.loaded_modules import load_module
from pipelines.embedding.model_handler import Embed, HubModelHandler
from pipelines.embedding.model_spec import ModelSpec
from pipelines.embedding.preprocess import Decode, Preprocess
from pipelines.embedding.reuse import ReadReusedVectors, ReusePlan
from pipelines.embedding.runtime import configure_threads
from pipelines.embedding.sources import DedupeIds, ReadRecords
from pipelines.hub import description, op_gate, registry
from pipelines.hub.module_info import ModuleInfo
from pipelines.hub.redaction import redact
from pipelines.hub.resolver import ResolvedModule
from pipelines.version import code_version


@dataclasses.dataclass(frozen=True)
class Job:
    """What a run needs besides its config, settled once at launch.

    Attributes:
      module: the module's description (handle, fingerprint, signatures).
      spec: how to call the selected signature.
      run_id: this run's id (temp dir and part names).
      metadata: the table's `hub_embed` metadata.
      reuse: what the run takes from its reuse table (None without `reuse`).
      op_gate: the op gate's verdict on the module (`Verdict.as_manifest()`).
    """

    module: ModuleInfo
    spec: ModelSpec
    run_id: str
    metadata: dict[str, Any]
    reuse: ReusePlan | None = None
    op_gate: dict[str, Any] = dataclasses.field(default_factory=dict)


def prepare(cfg: EmbedConfig, module: ModuleInfo | None = None) -> Job:
    """Describes the module and checks the config against it, before any graph is built.

    Args:
      cfg: a validated config.
      module: the module's description, when the caller already has it.

    The module passes the op gate before anything loads or calls it (workers
    do not scan it again).

    Raises:
      ConfigError: the signature or output key does not exist or does not suit the
        input, or the reuse table does not exist, is not committed or is corrupt.
      HandleError, ModuleError: the module cannot be resolved or loaded, or the
        op gate refuses it (naming each op and the function that holds it).
    """
    if module is None:  # description.describe; a module it has to load is kept for in-process workers
        resolved = registry.resolve(cfg.model.module, options=cfg.model.resolve_options())
        verdict = gate(cfg, resolved.path, resolved.fingerprint)
        module = description.describe_resolved(resolved, functools.partial(_load_for_workers, cfg))
    else:
        verdict = gate(cfg, module.path, module.fingerprint)
    spec = model_spec.for_module(cfg, module)
    if spec.dim is None:  # The signature leaves the dimension open: ask the module.
        example = np.zeros((*spec.resize_to, 3), np.float32) if spec.kind == "image" else "dimension probe"
        spec = dataclasses.replace(spec, dim=_handler(cfg, module, spec, *_worker_threads(cfg)).probe_dim(example))
    run_id = sinks.new_run_id()
    metadata = {
        "module": redact(cfg.model.module),
        "fingerprint": module.fingerprint,
        "module_name": module.name,
        "module_version": module.version,
        "module_format": module.format,
        "module_precision": module.precision,
        "signature": cfg.model.signature,
        "output_key": spec.output_key,
        "dimension": spec.dim,
        "sequence": spec.sequence,
        "token_trim": spec.trim.label() if spec.trim else None,
        "content_hash": content.scheme(spec),
        "config_hash": cfg.config_hash(),
        "code_version": code_version(),
        "run_id": run_id,
    }
    reuse_plan = reuse.plan(cfg.sink.reuse, metadata) if cfg.sink.reuse else None
    return Job(module, spec, run_id, metadata, reuse_plan, verdict)


def gate(cfg: EmbedConfig, module_dir: str, fingerprint: str) -> dict[str, Any]:
    """The op gate's verdict on a module, as the manifest records it; cached under the module's fingerprint.

    Raises:
      ModuleError: the module holds ops the gate refuses that neither
        `allow_ops` nor `trust_module` lets through.
    """
    verdict = op_gate.check(
        module_dir, allow_ops=cfg.model.allow_ops, trust=cfg.model.trust_module, fingerprint=fingerprint
    )
    return verdict.as_manifest()


def decode_threads(cfg: EmbedConfig, options: PipelineOptions) -> int:
    """Images decoded side by side per worker process: the config's, else the process's share of the cores."""
    return cfg.preprocess.decode_threads or tf_threads(options) or os.cpu_count() or 1


def _worker_threads(cfg: EmbedConfig) -> tuple[int | None, int]:
    """TensorFlow threads per worker process (`tf_threads`) and image calls side by side (`side_by_side_calls`)."""
    options = PipelineOptions(list(cfg.beam_args))
    return tf_threads(options), side_by_side_calls(cfg, options)


def _load_for_workers(cfg: EmbedConfig, resolved: ResolvedModule) -> Any:
    """Loads the module in the launcher (to describe it), TensorFlow's threads first set as this run's workers set them.

    In-process workers reuse this copy (`load_module`), and TensorFlow's
    pools cannot change once it has started (see docs/design/embedding.md).
    """
    configure_threads(*_worker_threads(cfg))
    return load_module(resolved)


def side_by_side_calls(cfg: EmbedConfig, options: PipelineOptions) -> int:
    """Image module calls run side by side in one process, each thread decoding its own call's images.

    A one-process run's decode threads (`decode_threads`) become call threads,
    each on one TensorFlow thread (see docs/design/embedding.md). 1 (calls one
    after another, images decoded by `Decode`) for texts and for several worker
    processes.
    """
    if cfg.source.kind != "image" or tf_threads(options) is not None:
        return 1
    return decode_threads(cfg, options)


def tf_threads(options: PipelineOptions) -> int | None:
    """TensorFlow threads per worker process: the cores shared out among processes.

    Multi-process DirectRunner: cores / workers. Dataflow runs one SDK process
    per vCPU: 1. Otherwise (one process): TensorFlow's default.
    """
    runner = options.view_as(StandardOptions).runner or ""
    if "Dataflow" in runner:
        return 1
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        workers = direct.direct_num_workers or os.cpu_count() or 1
        return max(1, (os.cpu_count() or 1) // workers)
    return None


# The worker command of Beam's FnApiRunner in multi-process mode, and ours (see `pipelines.embedding.worker`).
BEAM_WORKER_COMMAND = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
WORKER_COMMAND = f"{sys.executable} -m pipelines.embedding.worker"


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline whose DirectRunner honors `--direct_num_workers` and `--direct_running_mode`.

    DirectRunner jobs run on Beam's FnApiRunner, configured as the DirectRunner
    configures it, whether or not Beam could fetch its Prism runner (which
    ignores those options), so a run behaves the same on every machine; its
    worker processes (multi-process mode) run `pipelines.embedding.worker`.
    Other runners are left to Beam.
    """
    if (options.view_as(StandardOptions).runner or "DirectRunner") not in ("DirectRunner", "direct"):
        return beam.Pipeline(options=options)
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=_LocalRunner(provision_info=provision), options=options)


class _LocalRunner(fn_runner.FnApiRunner):
    """Beam's FnApiRunner, whose worker processes run `pipelines.embedding.worker` instead of Beam's worker main."""

    def run_via_runner_api(self, pipeline_proto: Any, options: PipelineOptions) -> Any:
        for environment in pipeline_proto.components.environments.values():
            if environment.urn == python_urns.SUBPROCESS_SDK and environment.payload == BEAM_WORKER_COMMAND.encode():
                environment.payload = WORKER_COMMAND.encode()
        return super().run_via_runner_api(pipeline_proto, options)


def _handler(
    cfg: EmbedConfig, module: ModuleInfo, spec: ModelSpec, threads: int | None = None, calls: int = 1
) -> HubModelHandler:
    return HubModelHandler(
        cfg.model.module,
        cfg.model.signature,
        module.fingerprint,
        spec,
        threads,
        calls,
        cfg.preprocess.max_image_pixels,
        cfg.model.resolve_options(),
    )


def build_pipeline(p: beam.Pipeline, cfg: EmbedConfig, job: Job | None = None) -> beam.PCollection:
    """Adds the embedding job to `p`.

    Args:
      p: the pipeline (its options decide TensorFlow threads per process).
      cfg: a validated config (see `config.load`; `config.check_paths` for the file system).
      job: the result of `prepare(cfg)`; prepared here when absent.

    Returns:
      The PCollection holding the committed manifest (one dict).
    """
    job = job or prepare(cfg)
    read = p | "Read" >> ReadRecords(cfg.source)
    unique = read.records | "DedupeIds" >> DedupeIds()
    ready = unique.records | "Preprocess" >> Preprocess(cfg.preprocess, job.spec)
    reusable = p | "ReadReuse" >> ReadReusedVectors(job.reuse, job.spec.sequence)
    joined = {"rows": ready.records, "reused": reusable} | "JoinContent" >> content.JoinContent()
    calls = side_by_side_calls(cfg, p.options)
    decoded = joined.misses | "Decode" >> Decode(cfg.preprocess, job.spec, decode_threads(cfg, p.options), calls > 1)
    embedded = decoded.records | "Embed" >> Embed(_handler(cfg, job.module, job.spec, tf_threads(p.options), calls))
    failures = (
        read.failures,
        unique.failures,
        ready.failures,
        decoded.failures,
        embedded.failures,
    ) | "AllFailures" >> beam.Flatten()
    tallies = (read.tallies, joined.tallies, embedded.tallies) | "AllTallies" >> beam.Flatten()
    assert job.spec.dim is not None  # `prepare` asks the module when its signature leaves it open
    schema = sinks.table_schema(job.spec.dim, job.spec.sequence, cfg.source.passthrough, job.metadata)
    manifest = {
        "table": job.metadata,
        "config": cfg.to_dict(),
        "reuse": job.reuse.to_manifest() if job.reuse else None,
        "op_gate": job.op_gate,
    }
    return {
        "records": (joined.reused, embedded.records),
        "failures": failures,
        "tallies": tallies,
    } | "WriteTable" >> sinks.WriteEmbeddingTable(cfg.sink, job.run_id, schema, manifest)
