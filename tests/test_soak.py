"""Load: short real texts through `python -m pipelines.embed` on the multi-process DirectRunner, memory sampled.

The command runs in a subprocess; a thread samples the resident memory of
its whole process tree (launcher and Beam workers, psutil) at a steady
interval, and a test hook (tests/fixtures/worker_hooks) logs each module call
so the embedding phase is known. Passing means: counts exact (every input id
once in the table, rows_in == rows_embedded, nothing failed), and no memory
growth after the first 10% of the rows embedded beyond MAX_GROWTH of the
baseline (see `reliability.memory_growth`).

* test_soak_default_module_200k (`make soak`): 200,000 texts through the
  default all-MiniLM-L6-v2 module, sampled every second. Sized by
  HUB_EMBED_SOAK_ROWS (default 200000) and HUB_EMBED_SOAK_MODULE.
* test_soak_machinery_small (`make test`, slow): 20,000 texts through the
  tiny test module, sampled every 0.1 s: the same code path, so the sampling
  and the checks are themselves tested.

The texts are real English: sentences of the bundled sample and of the
benchmark docstring corpus, used whole, cut to a clause, or two halves joined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelines.embedding import config, sinks
from tests.fixtures import reliability as rel

MAX_GROWTH = 0.10


def soak(tmp_path, rows: int, module: str, interval_s: float, *extra: str, timeout_s: float = 3 * 3600) -> dict:
    src = rel.write_lines(tmp_path / "texts.txt", rel.short_texts(rows))
    out = str(tmp_path / "out")
    progress = tmp_path / "progress.log"
    log_path = tmp_path / "embed.log"
    argv = [
        sys.executable,
        "-m",
        "pipelines.embed",
        "--input",
        src,
        "--output",
        out,
        "--module",
        module,
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
        *extra,
    ]
    path = os.pathsep.join(p for p in (rel.WORKER_HOOKS, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HUB_EMBED_TEST_PROGRESS": str(progress)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=rel.REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        with rel.MemorySampler(proc.pid, interval_s) as sampler:
            try:
                rc = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert rc == 0, open(log_path).read()[-5000:]

    counts = sinks.read_table_manifest(out)["counts"]
    assert (counts["rows_in"], counts["rows_embedded"], counts["rows_failed"]) == (rows, rows, 0), counts
    ids = sinks.read_table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == rows
    assert set(ids) == {f"{src}:{i}" for i in range(1, rows + 1)}

    memory = rel.memory_growth(sampler.samples, rel.read_progress(progress))
    # Every distinct content went through exactly one module call that was kept (rows sharing a content share it).
    assert memory["rows"] == counts["contents_embedded"] == rows - counts["rows_deduplicated"]
    report = {"rows": rows, "module": module, "counts": counts, "memory": memory}
    with open(tmp_path / "soak-report.json", "w") as f:
        json.dump({**report, "samples": sampler.samples, "per_process": sampler.per_process}, f)
    print("soak:", json.dumps(report, indent=2))
    assert memory["growth"] <= MAX_GROWTH, memory
    return report


@pytest.mark.soak
def test_soak_default_module_200k(tmp_path):
    module = os.environ.get("HUB_EMBED_SOAK_MODULE", config.DEFAULT_MODULE)
    if not os.path.isdir(os.path.join(rel.REPO, module)) and not os.path.isdir(module):
        pytest.skip(f"{module} is built by `make setup`")
    rows = int(os.environ.get("HUB_EMBED_SOAK_ROWS", "200000"))
    report = soak(tmp_path, rows, module, 1.0)
    assert report["memory"]["samples_after_warmup"] >= 10


@pytest.mark.slow
def test_soak_machinery_small(tiny, tmp_path):
    report = soak(tmp_path, 20_000, tiny.text, 0.1, "--batch-size", "8", timeout_s=600)  # ~300 module calls
    assert report["memory"]["samples_after_warmup"] >= 3
    assert report["memory"]["processes"] >= 3  # the launcher and two workers were sampled


def test_memory_growth_sees_a_leak_and_ignores_the_warm_up():
    progress = [(100.0 + t, 1, 10) for t in range(100)]  # 1,000 rows over 100 s
    flat = [(100.0 + t / 2, 2_000 << 20, 3) for t in range(200)]
    warm = [(95.0, 500 << 20, 3)] + flat  # loading before the embedding started: not the baseline
    leak = [(100.0 + t / 2, (2_000 << 20) + t * (5 << 20), 3) for t in range(200)]
    assert rel.memory_growth(warm, progress)["growth"] == 0
    leaking = rel.memory_growth(leak, progress)
    assert leaking["growth"] > 0.4 and leaking["slope_bytes_per_row"] == pytest.approx(2 * (5 << 20) / 10, rel=0.01)
