"""`pipelines.embedding.worker`: the worker process of multi-process DirectRunner jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.embedding import config, pipeline, sinks

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _main_module(_: object) -> str:
    return sys.modules["__main__"].__spec__.name


def test_multi_process_workers_run_pipelines_worker(tmp_path):
    p = pipeline.new_pipeline(PipelineOptions(MULTI_PROCESS))
    _ = p | beam.Create(range(8)) | beam.Map(_main_module) | beam.io.WriteToText(str(tmp_path / "main"))
    p.run().wait_until_finish()
    written = [line for path in tmp_path.glob("main*") for line in path.read_text().splitlines()]
    assert written == ["pipelines.embedding.worker"] * 8


def test_each_worker_reports_its_startup_once(tiny, tmp_path):
    cfg = config.load(["--module", tiny.text, "--output", str(tmp_path / "out"), *MULTI_PROCESS])
    p = pipeline.new_pipeline(PipelineOptions(list(cfg.beam_args)))
    pipeline.build_pipeline(p, cfg)
    result = p.run()
    result.wait_until_finish()
    assert sinks.read_table_manifest(str(tmp_path / "out"))["counts"]["rows_embedded"] == 400
    (startup,) = result.metrics().query(MetricsFilter().with_name("worker_startup_ms"))["distributions"]
    # One value per worker process that embedded rows (both, or one when a worker got every row).
    assert 1 <= startup.committed.count <= 2
    assert startup.committed.min > 50 and startup.committed.max < 60_000


def test_the_in_process_runner_reports_no_worker_startup(tiny, tmp_path):
    cfg = config.load(["--module", tiny.text, "--output", str(tmp_path / "out")])
    p = pipeline.new_pipeline(PipelineOptions(list(cfg.beam_args)))
    pipeline.build_pipeline(p, cfg)
    result = p.run()
    result.wait_until_finish()
    assert result.metrics().query(MetricsFilter().with_name("worker_startup_ms"))["distributions"] == []


def test_exit_now_flushes_and_skips_the_interpreter_teardown():
    script = textwrap.dedent(
        """
        import atexit, logging, sys
        from pipelines.embedding import worker
        atexit.register(lambda: print("teardown ran", flush=True))
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        print("buffered line")  # stdout is a pipe: block-buffered until flushed
        logging.info("last log record")
        worker.exit_now(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout == "buffered line\n"  # flushed, and no atexit handler ran
    assert "last log record" in done.stderr


def test_a_harness_that_cannot_start_exits_with_status_1():
    """Without the runner's environment (control endpoint) Beam's harness fails: the worker says so and exits 1."""
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.embedding.worker"], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 1
    assert "CONTROL_API_SERVICE_DESCRIPTOR" in done.stderr
