"""Inside a contender process: running `pipelines.embed`'s job on DirectRunner and reading Beam's metrics of it.

TensorFlow and Beam are imported inside the functions: the sentence-transformers
contenders import this module too, in virtual environments without them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks import harness

MP_BEAM_ARGS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")
EMBEDDINGS_FILE = "embeddings.npy"


def configure_tf_threads(intra_op: int, inter_op: int) -> None:
    """Sets this process's TensorFlow thread pools (before TensorFlow runs anything)."""
    from pipelines.hub.loading import import_tf

    tf = import_tf()  # with tensorflow_text's ops, which the module's graph uses
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def save_embeddings(workdir: str, embeddings: np.ndarray) -> str:
    """Writes a contender's embeddings (input order, float32) into its workdir; returns the path."""
    path = os.path.join(workdir, EMBEDDINGS_FILE)
    np.save(path, np.asarray(embeddings, np.float32))
    return path


def table_embeddings(table: Any, ids: list[str]) -> np.ndarray:
    """The `embedding` column of an Arrow table with an `id` column, in the order of `ids`."""
    import pyarrow as pa

    column = table.column("embedding").combine_chunks()
    values = column.flatten() if not pa.types.is_fixed_size_list(column.type) else column.values
    matrix = np.asarray(values, np.float32).reshape(len(column), -1)
    position = {row_id: i for i, row_id in enumerate(table.column("id").to_pylist())}
    missing = [row_id for row_id in ids if row_id not in position]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(ids)} rows are missing from the output, e.g. {missing[:3]}")
    return matrix[[position[row_id] for row_id in ids]]


def beam_distributions(result: Any, name: str) -> list[Any]:
    """The committed (else attempted) values of a Beam distribution metric, over all steps."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_name(name))["distributions"]
    values = [r.committed if r.committed is not None and r.committed.count else r.attempted for r in found]
    return [v for v in values if v is not None and v.count]


def runinference_times(result: Any) -> dict[str, float | int]:
    """Model load and inference time that Beam's RunInference recorded in a finished pipeline.

    Workers load the module on their first batch, inside `run_inference`, and
    report the load as `hub_embed/model_load_ms`; Beam's
    `load_model_latency_milli_secs` only times the fingerprint check at set-up.

    Returns:
      `load_s`: the slowest worker's model load (workers load side by side);
      `inference_s`: time inside the handler's `run_inference` (module calls
        and the handler's own Python work) less the loads in it, summed over workers;
      `inference_batches`: how many `run_inference` calls there were;
      `worker_startup_s`: the quickest worker process's start-up (interpreter
        and Beam imports up to a ready harness, `hub_embed/worker_startup_ms`),
        0 when the run started no worker process.
    """
    from pipelines.embedding.model_handler import MODEL_LOAD_METRIC

    loads = beam_distributions(result, MODEL_LOAD_METRIC)
    inference = beam_distributions(result, "inference_batch_latency_micro_secs")
    startups = beam_distributions(result, "worker_startup_ms")
    return {
        "load_s": max((d.max for d in loads), default=0) / 1e3,
        "inference_s": sum(d.sum for d in inference) / 1e6 - sum(d.sum for d in loads) / 1e3,
        "inference_batches": sum(d.count for d in inference),
        "worker_startup_s": min((d.min for d in startups), default=0) / 1e3,
    }


def run_beam(p: Any) -> tuple[Any, float]:
    """Runs a Beam pipeline to the end; returns its result and the wall seconds."""

    def run() -> Any:
        result = p.run()
        result.wait_until_finish()
        return result

    return harness.timed(run)


def run_embed_job(argv: list[str], output: str, ids: list[str], workdir: str) -> dict[str, Any]:
    """`pipelines.embed`'s job on DirectRunner, in this process: input to a committed table.

    The timed `seconds` are the run's wall time less the fixed cost of readying
    a worker: the model load inside the workers (the slowest worker's:
    `worker_load_s`) and, with worker processes, the start-up of the quickest
    one (`worker_startup_s`; the in-process worker's equivalent happened before
    the run). `job_seconds` keeps the start-up in. Preparing the job is not
    timed either and is reported as `prepare_s`; `load_s` is the sum of the
    excluded parts. `peak_rss_mb` is taken when the table is committed, before
    it is read back.

    Args:
      argv: the job's `pipelines.embed` arguments, `--output output` among them.
      output: the table's directory.
      ids: the input's row ids, in the order the embeddings are saved.
      workdir: where the embeddings go (`EMBEDDINGS_FILE`).

    Raises:
      RuntimeError: the job did not commit its table.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.embedding import config, pipeline, sinks

    cfg = config.load(argv)
    config.check_paths(cfg)
    job, prepare_s = harness.timed(lambda: pipeline.prepare(cfg))
    p = pipeline.new_pipeline(PipelineOptions(list(cfg.beam_args)))
    pipeline.build_pipeline(p, cfg, job)
    result, run_s = run_beam(p)
    run_peak_rss_mb = harness.process_peak_rss_mb()
    manifest = sinks.read_table_manifest(output)
    if manifest is None or manifest["run_id"] != job.run_id:
        raise RuntimeError(f"the pipeline did not commit a table at {output} (state {result.state})")
    save_embeddings(workdir, table_embeddings(sinks.read_table(output), ids))
    times = runinference_times(result)
    worker_load_s = times.pop("load_s")
    job_seconds = run_s - worker_load_s
    seconds = job_seconds - times["worker_startup_s"]
    return {
        "rows": len(ids),
        "seconds": seconds,
        "job_seconds": job_seconds,
        "load_s": prepare_s + worker_load_s + times["worker_startup_s"],
        "prepare_s": prepare_s,
        "worker_load_s": worker_load_s,
        "run_s": run_s,
        "outside_inference_s": seconds - times["inference_s"],
        "counts": manifest["counts"],
        "batch_size": job.spec.batch_size,
        "peak_rss_mb": run_peak_rss_mb,
        **times,
    }
