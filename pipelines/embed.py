"""`python -m pipelines.embed`: embed a text corpus or an image set into a Parquet table.

With no arguments it embeds the bundled sample corpus (400 sentences) with the
default all-MiniLM-L6-v2 module into `output/sample/`. See `config` for the
flags and YAML keys; flags it does not define are Beam pipeline options.

After the commit it writes the table's HTML report, `OUTPUT/_report.html`
(`pipelines.report`; `--no-report` skips it). A report that fails is one
warning line: the table stays committed and the exit status is 0.

With a `publish:` section in its job file, the committed table is then
published into that pgvector collection (`pipelines.publish`).

Exit status: 0 committed (and published), 1 the run failed (nothing
committed), 2 invalid config, input, output or module (checked before
anything runs), another run committed to the output while this one ran (this
one committed nothing), or the publish after the commit failed (the table
stays committed).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from pipelines import console
from pipelines.embedding import commit, config, pipeline, sinks
from pipelines.embedding.model_handler import MODEL_LOAD_METRIC
from pipelines.embedding.paths import display, is_local
from pipelines.embedding.records import METRICS_NAMESPACE
from pipelines.hub.errors import HandleError, ModuleError
from pipelines.hub.locks import LockError
from pipelines.publish import publishing
from pipelines.publish.__main__ import summary as publish_summary
from pipelines.publish.errors import PublishError, PublishFailed
from pipelines.publish.options import PublishConfig
from pipelines.report.build import write_report
from pipelines.report.compare import compare_tables
from pipelines.report.compare_section import comparison_html
from pipelines.report.options import ReportOptions

_LOG = logging.getLogger("hub_embed")
_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception): ")
# What the FnApiRunner raises when a worker process dies mid-bundle.
_WORKER_DIED = ("Channel closed prematurely", "Worker subprocess exited with return code")
# How a lost commit reads in the runner's error (see `commit.CommitConflict`).
_CONFLICT = re.compile(rf"{commit.CommitConflict.__name__}: (.*? while this one ran)")


def _model_load_s(result: Any) -> float:
    """The slowest worker's module load (`hub_embed/model_load_ms`), 0 when no worker loaded it or the runner has no metrics."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(MODEL_LOAD_METRIC))
    except Exception:  # noqa: BLE001 - a runner without metrics: say nothing about the load
        return 0.0
    loads = [d.committed or d.attempted for d in found["distributions"]]
    return max((d.max for d in loads if d and d.count), default=0) / 1e3


def _summary(cfg: config.EmbedConfig, manifest: dict, seconds: float, load_s: float = 0.0) -> str:
    counts = manifest["counts"]
    table = manifest["table"]
    output = display(cfg.sink.output_dir)
    lines = [
        f"Embedding table: {output}  ({len(manifest['files'])} part files; manifest {output}/_SUCCESS)",
        f"  module {display(table['module'])} ({table['signature']}/{table['output_key']}, dim {table['dimension']}"
        f"{', per token' if table['sequence'] else ''})",
        f"  rows in {counts['rows_in']}, embedded {counts['rows_embedded']}, reused {counts['rows_reused']}, "
        f"failed {counts['rows_failed']} in {seconds:.1f}s ({counts['rows_in'] / max(seconds, 1e-9):.1f} rows/s)",
    ]
    if load_s >= 0.05:
        lines.append(f"  {load_s:.1f}s of it loading the module on the workers (TensorFlow's import included)")
    if counts["rows_deduplicated"]:
        lines.append(f"  {counts['rows_deduplicated']} rows shared another row's content (one module call per content)")
    reuse = manifest.get("reuse")
    if reuse and reuse["used"]:
        lines.append(f"  reused vectors from {display(reuse['table'])} (run {reuse['run_id']})")
    elif reuse:
        lines.append(f"  reused nothing from {display(reuse['table'])}: {reuse['reason']}")
    if counts["rows_failed"]:
        lines.append(f"  failures by stage {counts['failed_by_stage']}: {output}/errors/")
    lines.append(f"  read it with: pipelines.embedding.sinks.read_table({output!r})")
    return "\n".join(lines)


def _remove_stale_report(output: str) -> None:
    """Deletes the output's report, if any (best effort: a report left behind is named by its own run id)."""
    path = FileSystems.join(output, config.REPORT_FILE)
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # noqa: BLE001 - the table is committed; an old report is only stale
        _LOG.warning("Could not remove the replaced table's report %s: %s", display(path), e)


def _root_cause(error: BaseException) -> str:
    """The last `SomeError: message` line of a failure (runners wrap worker errors in long traces)."""
    text = f"{type(error).__name__}: {error}"
    causes = [line.strip() for line in text.splitlines() if _ERROR_LINE.match(line)]
    return causes[-1] if causes else text.splitlines()[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one embedding job; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not console.verbose(argv if argv is not None else sys.argv[1:]):
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    commit.quiet_conflict_tracebacks()  # a lost commit is one line below, not Beam's traceback
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = config.load(argv)
        # The launcher's own file-system calls (paths, reuse table, manifest) use the job's options too.
        FileSystems.set_options(PipelineOptions(list(cfg.beam_args)))
        config.check_paths(cfg)
        publish = _publish_config(cfg)
        job = pipeline.prepare(cfg)
        commit.mark_run(cfg.sink, job.run_id)  # until the run is over: no other run's commit removes its files
    except (config.ConfigError, HandleError, ModuleError, LockError, PublishError) as e:
        print(f"hub-embed: error: {e}", file=sys.stderr)
        return 2
    options = PipelineOptions(list(cfg.beam_args))
    if "Dataflow" in (options.view_as(StandardOptions).runner or ""):
        local = [path for path in (cfg.source.input, cfg.sink.output_dir, cfg.model.module) if is_local(path)]
        if local:
            _LOG.warning("Dataflow workers cannot read local paths %s; use gs:// paths.", local)
    _LOG.info(
        "Embedding %s (%s) with %s into %s, run %s",
        display(cfg.source.input),
        cfg.source.input_format,
        display(job.metadata["module"]),
        display(cfg.sink.output_dir),
        job.run_id,
    )
    start = time.monotonic()
    try:
        status = _run(cfg, job, options, start)
        if status == 0 and publish is not None and not options.view_as(TestOptions).dry_run:
            status = _publish(publish)
        return status
    finally:  # the run is over, whatever its end: another run's commit may remove what it left
        commit.release_run(cfg.sink, job.run_id)


def _publish_config(cfg: config.EmbedConfig) -> PublishConfig | None:
    """The publish of the table after its commit, checked before the run (None without a `publish:` section).

    Raises:
      ConfigError: the section names an Airflow connection, or its variable is unset.
      PublishError: the database's connection string cannot be parsed.
    """
    if cfg.publish is None:
        return None
    uri = cfg.publish.database_uri(os.environ)
    options = cfg.publish.options(cfg.beam_args)
    return PublishConfig.create(cfg.sink.output_dir, uri, cfg.publish.collection, options)


def _publish(publish: PublishConfig) -> int:
    """Publishes the committed table; returns 0, or 2 with one line when the publish fails (the table stays)."""
    _LOG.info("Publishing %s into collection %s at %s", publish.table, publish.collection, publish.target.display)
    start = time.monotonic()
    try:
        result = publishing.run(publish)
    except (PublishError, PublishFailed, psycopg.Error) as e:
        reason = " ".join(publish.target.scrub(str(e)).split())
        print(f"hub-embed: error: the table is committed, but publishing it failed: {reason}", file=sys.stderr)
        return 2
    print(publish_summary(result, display(publish.table), publish.target.display, time.monotonic() - start))
    return 0


def _run(cfg: config.EmbedConfig, job: pipeline.Job, options: PipelineOptions, start: float) -> int:
    """Builds and runs the job's pipeline; returns the exit status."""
    p = pipeline.new_pipeline(options)
    pipeline.build_pipeline(p, cfg, job)
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as e:  # The runner reports a failed job by raising; say why in one line.
        lost = _CONFLICT.search(f"{type(e).__name__}: {e}")  # raised as is in one process, wrapped from workers
        if lost:
            print(f"hub-embed: error: {lost.group(1)}", file=sys.stderr)
            return 2
        cause = _root_cause(e)
        if any(sign in str(e) for sign in _WORKER_DIED):
            cause += (
                " (a Beam worker process died: killed, out of memory or crashed; the DirectRunner does not retry "
                "its bundle. Re-running the same command is safe)"
            )
        print(f"hub-embed: run failed, nothing committed: {cause}", file=sys.stderr)
        return 1
    if options.view_as(TestOptions).dry_run:
        print("Dry run: the job graph was built and not submitted.")
        return 0
    manifest = sinks.read_table_manifest(cfg.sink.output_dir)
    if manifest is None or manifest["run_id"] != job.run_id:
        print(f"hub-embed: run ended in state {result.state} without committing {cfg.sink.output}.", file=sys.stderr)
        return 1
    print(_summary(cfg, manifest, time.monotonic() - start, _model_load_s(result)))
    _report(cfg, manifest, time.monotonic() - start)
    return 0


def _report(cfg: config.EmbedConfig, manifest: dict, wall_s: float) -> None:
    """Writes the committed table's report and prints `report: <path>`; a failure is one warning line, not an error.

    Without a new report, the one a replaced table left is removed: it describes a table that is gone.
    """
    if not cfg.sink.report or manifest["table"].get("sequence"):
        _remove_stale_report(cfg.sink.output_dir)
        if cfg.sink.report:
            print("report: none (the table holds per-token vectors; a report covers one vector per row)")
        return
    try:
        options = ReportOptions(color_by=cfg.sink.report_color_by, wall_s=wall_s)
        sections = []
        if cfg.sink.report_compare is not None:
            sections.append(comparison_html(compare_tables(cfg.sink.output_dir, cfg.sink.report_compare)))
        written = write_report(cfg.sink.output_dir, options, sections=sections)
    except Exception as e:  # noqa: BLE001 - the table is committed whatever happens to its report
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        print(f"hub-embed: warning: the table is committed, but its report was not written: {reason}", file=sys.stderr)
        _remove_stale_report(cfg.sink.output_dir)
        return
    print(f"report: {display(written.path)}  ({written.seconds:.1f}s)")


if __name__ == "__main__":
    # Once the summary is printed and the streams are flushed, nothing is left to do: end the process
    # without tearing down an interpreter that holds TensorFlow and Beam's threads (2 s or more).
    from pipelines.embedding import worker

    worker.exit_now(main())
