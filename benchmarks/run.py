"""`python -m benchmarks.run`: the pipeline's speed against the raw module, sentence-transformers and stock Beam.

    python -m benchmarks.run --corpus benchmarks/data/docstrings.jsonl --rows 2000 [--json OUT]
                             [--only raw,pipeline,...,incremental] [--module DIR] [--module-bf16 DIR]
                             [--incremental-rows 50000] [--incremental-small-rows 10000]

Every contender embeds the same first N texts of the corpus (repeated from the
start when it holds fewer) with the same module, in a process of its own, with
TensorFlow (and PyTorch) at 2 intra-op / 1 inter-op threads. Model load and
warm-up are excluded from the timed part and reported apart.

Contenders (`--only` takes these names):

* `raw`: the module's `default` signature called once with all texts after a
  warm-up call: it tokenizes, sorts by token length and encodes batches of 32
  with exact padding; no Beam, no I/O. The ceiling.
* `pipeline`: `pipelines.embed`'s job on DirectRunner in one process, from the
  input file to the committed Parquet table; the workers' model load (Beam's
  RunInference metric) is subtracted and reported as `load_s`.
* `pipeline_mp`: the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`.
  Each worker process must also start (interpreter and Beam imports, ≈1 s),
  which the in-process worker did before the run began; that start-up
  (`hub_embed/worker_startup_ms`, quickest worker) is subtracted with the
  model load. `mp_vs_single_with_worker_startup` keeps it in.
* `raw_bf16`, `pipeline_bf16`, `pipeline_mp_bf16`: `raw`, `pipeline` and
  `pipeline_mp` with the bfloat16 module (`--module-bf16`, default
  `build/modules/all-minilm-l6-v2-bf16/1`, from `python -m pipelines.export
  --precision bfloat16`); an error saying so when it is not built.
* `sentence_transformers`: `SentenceTransformer.encode(batch_size=32)` on
  PyTorch CPU with the original weights; runs with `--bench-python` (default
  `.venv-bench/bin/python`, see `make bench`).
* `st_bf16`: the same with the weights loaded in bfloat16
  (`model_kwargs={"dtype": torch.bfloat16}`), same interpreter.
* `st_onnx`: sentence-transformers' ONNX backend (`backend="onnx"`, Optimum
  + ONNX Runtime CPU), exported from the local weights into the contender's
  work directory; runs with `--bench-onnx-python` (default
  `.venv-bench-onnx/bin/python`: sentence-transformers 5.7, since no Optimum
  release supports the transformers 5 of sentence-transformers 6).
* `st_onnx_int8`: the same model quantized to int8 by
  `export_dynamic_quantized_onnx_model` with the preset that fits the CPU
  (`avx512_vnni` where it has AVX512-VNNI). Export and quantization are part
  of `load_s`, not of the timed part.
* `beam_mltransform`: stock Beam `MLTransform` + `TensorflowHubTextEmbeddings`
  with the same module, JSONL in, Parquet out, on the same runner.
* `pipeline_10n`: the pipeline on 10 x N rows, for `peak_rss_mb_10n`. A
  pipeline's peak RSS is its process's high-water mark when the table is
  committed (model load included), before the harness reads the table back.
* `incremental` (issue 13; `benchmarks.incremental`): whole
  `python -m pipelines.embed` commands, timed from outside, on a scenario
  built from the corpus: run 1 embeds `--incremental-rows` texts (default
  50,000: the corpus repeated with one small edit per copy), run 2 has 1% of
  them changed, 1% added, 1% removed and 2% duplicates and runs with
  `--reuse` of run 1's table; plus 1-row commands for the fixed cost, and
  all-reused runs at N and at `--incremental-small-rows` (default 10,000; 0:
  none) for the cost of an unchanged row. Runs after the other tasks; `--rows`
  is not needed when it runs alone.

The JSON report has these top-level keys (null when a contender was skipped
or failed; `errors` says why): `raw_rows_per_s`, `pipeline_rows_per_s`,
`pipeline_mp_rows_per_s`, `sentence_transformers_rows_per_s`,
`beam_mltransform_rows_per_s`, `raw_bf16_rows_per_s`,
`pipeline_bf16_rows_per_s`, `pipeline_mp_bf16_rows_per_s`, `st_bf16_rows_per_s`,
`st_onnx_rows_per_s`, `st_onnx_int8_rows_per_s`, `pipeline_vs_raw`,
`pipeline_vs_sentence_transformers`, `pipeline_vs_beam_mltransform`,
`pipeline_bf16_vs_fp32`, `pipeline_bf16_vs_sentence_transformers`,
`pipeline_best_vs_st_best_0999` and `pipeline_best_vs_st_best_099` (our
fastest pipeline contender whose embeddings' min cosine to `raw`'s, the
float32 module's, is at least 0.999, resp. 0.99, over the fastest
sentence-transformers contender within the same bound; the winners are
`pipeline_best_0999`, `st_best_0999`, `pipeline_best_099`, `st_best_099`),
`mp_vs_single`, `overhead_us_per_row`, `load_s`, `peak_rss_mb_n`,
`peak_rss_mb_10n`, `rss_10n_vs_n`, `mp_vs_single_with_worker_startup`,
`pipeline_marginal_rows_per_s` (the rows
between the N and 10 x N runs over the extra seconds: throughput without fixed
costs), `incremental_vs_full_wall`, `incremental_vs_full_work`,
`incremental_us_per_unchanged_row` (and `_small`, `_marginal`, `_run2`),
`incremental_fixed_full_s`, `incremental_fixed_reuse_s`,
`incremental_fixed_reuse_hit_s`, `incremental_run1_s`,
`incremental_run2_s`, `incremental_counts_ok`, `incremental_bit_identical`
(see `benchmarks.incremental`); plus `targets`, `meta` (with the CPU's model
name and which of its bfloat16/int8 flags it has: `cpu`, `cpu_features`), `contenders` (every
contender's full result: load, warm-up and RunInference times, peak RSS,
`min_cosine_vs_raw` and `mean_cosine_vs_raw`, the module it used), `incremental` (its commands, counts and checks) and `errors`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from benchmarks import contenders, corpus, cpu, incremental
from pipelines.embedding.config import DEFAULT_MODULE

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BENCH_PYTHON = os.path.join(".venv-bench", "bin", "python")
DEFAULT_BENCH_ONNX_PYTHON = os.path.join(".venv-bench-onnx", "bin", "python")
DEFAULT_MODULE_BF16 = "build/modules/all-minilm-l6-v2-bf16/1"
DEFAULT_TIMEOUT_S = 3600
LOG_TAIL_LINES = 15
BUSY_LOAD_PER_CORE = 0.3
METRIC_WIDTH = 40
# The incremental group's report keys (`benchmarks.incremental.metrics`).
INCREMENTAL_KEYS = (
    "incremental_vs_full_wall",
    "incremental_vs_full_work",
    "incremental_us_per_unchanged_row",
    "incremental_us_per_unchanged_row_small",
    "incremental_us_per_unchanged_row_marginal",
    "incremental_us_per_unchanged_row_run2",
    "incremental_fixed_full_s",
    "incremental_fixed_reuse_s",
    "incremental_fixed_reuse_hit_s",
    "incremental_run1_s",
    "incremental_run2_s",
    "incremental_counts_ok",
    "incremental_bit_identical",
)
PYCACHE_DIR = os.path.join("build", "bench-pycache")


# Task.interpreter: this Python, the PyTorch one (`.venv-bench`), the ONNX Runtime one (`.venv-bench-onnx`).
MAIN, BENCH, BENCH_ONNX = "main", "bench", "bench_onnx"
# Task.module: `--module` or `--module-bf16`.
FLOAT32, BFLOAT16 = "float32", "bfloat16"


@dataclasses.dataclass(frozen=True)
class Task:
    """One measurement: a contender on N (or a multiple of N) rows.

    Attributes:
      contender: name in `benchmarks.contenders.CONTENDERS`.
      label: its row in the printed table.
      rows_factor: rows = N x this.
      interpreter: which Python runs it: `MAIN` (this one), `BENCH` (PyTorch and
        sentence-transformers, `--bench-python`) or `BENCH_ONNX` (its ONNX backend, `--bench-onnx-python`).
      module: which module it embeds with: `FLOAT32` (`--module`) or `BFLOAT16` (`--module-bf16`).
    """

    contender: str
    label: str
    rows_factor: int = 1
    interpreter: str = MAIN
    module: str = FLOAT32


TASKS: dict[str, Task] = {
    "raw": Task("raw", "raw module, one call"),
    "raw_bf16": Task("raw", "raw bf16 module", module=BFLOAT16),
    "pipeline": Task("pipeline", "pipeline, DirectRunner"),
    "pipeline_bf16": Task("pipeline", "pipeline, bf16 module", module=BFLOAT16),
    "pipeline_mp": Task("pipeline_mp", "pipeline, 2 processes"),
    "pipeline_mp_bf16": Task("pipeline_mp", "pipeline, 2 proc., bf16", module=BFLOAT16),
    "sentence_transformers": Task("sentence_transformers", "sentence-transformers", interpreter=BENCH),
    "st_bf16": Task("st_bf16", "sentence-transformers bf16", interpreter=BENCH),
    "st_onnx": Task("st_onnx", "ST ONNX Runtime", interpreter=BENCH_ONNX),
    "st_onnx_int8": Task("st_onnx_int8", "ST ONNX Runtime int8", interpreter=BENCH_ONNX),
    "beam_mltransform": Task("beam_mltransform", "Beam MLTransform"),
    "pipeline_10n": Task("pipeline", "pipeline, 10 x N rows", rows_factor=10),
}
# Our pipelines and sentence-transformers' ways to run, for the best-at-parity ratios.
PIPELINE_CONTENDERS = ("pipeline", "pipeline_mp", "pipeline_bf16", "pipeline_mp_bf16")
ST_CONTENDERS = ("sentence_transformers", "st_bf16", "st_onnx", "st_onnx_int8")
# Suffix of the best-at-parity keys -> the least min cosine to the float32 `raw` embeddings.
PARITY_BOUNDS = {"0999": 0.999, "099": 0.99}
# Contenders whose rows/s the report lists as `<name>_rows_per_s`.
SPEED_KEYS = (
    "raw",
    "pipeline",
    "pipeline_mp",
    "sentence_transformers",
    "beam_mltransform",
    "raw_bf16",
    "pipeline_bf16",
    "pipeline_mp_bf16",
    "st_bf16",
    "st_onnx",
    "st_onnx_int8",
)
# Task groups that are not one contender process: `--only` takes their names too.
INCREMENTAL = "incremental"
GROUPS = (INCREMENTAL,)
# (metric, comparison, bound): the issues' targets.
TARGETS = (
    ("pipeline_vs_raw", ">=", 0.85),
    ("pipeline_vs_sentence_transformers", ">=", 2.0),
    ("pipeline_vs_beam_mltransform", ">=", 3.0),
    ("mp_vs_single", ">=", 0.95),
    ("pipeline_bf16_vs_fp32", ">=", 1.8),
    ("pipeline_bf16_vs_sentence_transformers", ">=", 2.0),
    ("pipeline_best_vs_st_best_0999", ">=", 1.2),
    ("pipeline_best_vs_st_best_099", ">=", 1.2),
    ("rss_10n_vs_n", "<=", 1.15),
    ("incremental_vs_full_wall", ">=", 5.0),
    ("incremental_vs_full_work", ">=", 15.0),
    ("incremental_us_per_unchanged_row", "<=", 150.0),
)


# --------------------------------------------------------------------------- running contenders


def write_input(texts: list[str], path: str) -> str:
    """Writes the texts as the contenders' input JSONL (`id`, `text`); returns the path."""
    records = ({"id": f"row-{i:07d}", "text": text} for i, text in enumerate(texts))
    corpus.write_jsonl(records, path)
    return path


def default_bench_python() -> str | None:
    """The interpreter for the sentence-transformers contender, or None when none has it."""
    candidate = os.path.join(REPO_ROOT, DEFAULT_BENCH_PYTHON)
    if os.access(candidate, os.X_OK):
        return candidate
    return sys.executable if importlib.util.find_spec("sentence_transformers") else None


def default_bench_onnx_python() -> str | None:
    """The interpreter for the ONNX contenders, or None when none has sentence-transformers and Optimum's ONNX Runtime."""
    candidate = os.path.join(REPO_ROOT, DEFAULT_BENCH_ONNX_PYTHON)
    if os.access(candidate, os.X_OK):
        return candidate
    found = all(importlib.util.find_spec(name) for name in ("sentence_transformers", "onnxruntime", "optimum"))
    return sys.executable if found else None


def interpreters(args: argparse.Namespace) -> dict[str, str | None]:
    """Each `Task.interpreter`'s Python (None: not installed)."""
    return {
        MAIN: sys.executable,
        BENCH: args.bench_python or default_bench_python(),
        BENCH_ONNX: args.bench_onnx_python or default_bench_onnx_python(),
    }


MISSING_INTERPRETER = {
    BENCH: f"sentence-transformers is not installed; see `make bench` ({DEFAULT_BENCH_PYTHON})",
    BENCH_ONNX: f"sentence-transformers' ONNX backend is not installed; see `make bench` ({DEFAULT_BENCH_ONNX_PYTHON})",
}


def task_module(task: Task, args: argparse.Namespace) -> str:
    """The module directory a task embeds with."""
    return args.module_bf16 if task.module == BFLOAT16 else args.module


def missing_module(task: Task, args: argparse.Namespace) -> str | None:
    """Why a task's module cannot be used (None: it is there)."""
    module = task_module(task, args)
    if os.path.isfile(os.path.join(module, "saved_model.pb")):
        return None
    if task.module == BFLOAT16:
        return f"no bfloat16 module at {module}; build it with `python -m pipelines.export --precision bfloat16`"
    return f"no module at {module}; build it with `make module`"


def contender_env(intra_op: int, inter_op: int) -> dict[str, str]:
    """The environment of a contender process.

    Thread counts, offline model hubs, `benchmarks` importable, and bytecode
    cached (under `build/`, outside the virtual environments) so that Beam's
    worker processes start as they would on a user's machine.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else every worker process compiles TensorFlow's sources anew
    path = env.get("PYTHONPATH")
    env.update(
        PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""),
        PYTHONPYCACHEPREFIX=os.path.join(REPO_ROOT, PYCACHE_DIR),
        TF_NUM_INTRAOP_THREADS=str(intra_op),
        TF_NUM_INTEROP_THREADS=str(inter_op),
        OMP_NUM_THREADS=str(intra_op),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONHASHSEED="0",
    )
    return env


def _tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:]).strip()


def run_task(name: str, python: str, input_path: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Runs one task in its own process.

    Returns:
      The contender's result, or `{"error": ...}` with the tail of its log.
    """
    task = TASKS[name]
    taskdir = os.path.join(workdir, name)
    os.makedirs(taskdir)
    result_path, log_path = os.path.join(taskdir, "result.json"), os.path.join(taskdir, "log.txt")
    module = task_module(task, args)
    cmd = [
        python,
        "-m",
        "benchmarks.contenders",
        task.contender,
        "--input",
        input_path,
        "--module",
        module,
        "--workdir",
        taskdir,
        "--result",
        result_path,
        "--intra-op",
        str(args.intra_op),
        "--inter-op",
        str(args.inter_op),
    ]
    if args.profile:
        cmd += ["--profile", os.path.join(os.path.abspath(args.profile), f"{name}.pstats")]
    try:
        with open(log_path, "w") as log:
            status = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                env=contender_env(args.intra_op, args.inter_op),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
                check=False,
            ).returncode
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout}s; log: {_tail(log_path)}"}
    if status != 0 or not os.path.exists(result_path):
        return {"error": f"exit status {status}; log:\n{_tail(log_path)}"}
    with open(result_path) as f:
        result = json.load(f)
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["embeddings"] = os.path.join(taskdir, "embeddings.npy")
    if task.interpreter == MAIN:
        result["module"] = module
    return result


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The row-wise cosine similarities of two embedding matrices of the same shape (float64)."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    dot = np.sum(reference * other, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    return dot / np.maximum(norms, 1e-12)


def min_cosine(reference: np.ndarray, other: np.ndarray) -> float:
    """The smallest row-wise cosine similarity of two embedding matrices of the same shape."""
    return float(np.min(cosines(reference, other)))


def add_parity(results: dict[str, dict[str, Any]]) -> None:
    """Adds `min_cosine_vs_raw` and `mean_cosine_vs_raw` to every result that embedded the same rows as `raw`.

    `raw` runs the float32 module (`--module`): it is the reference of every
    contender, the bfloat16 and int8 ones included.
    """
    raw = results.get("raw", {})
    if "embeddings" not in raw:
        return
    reference = np.load(raw["embeddings"])
    for result in results.values():
        if result.get("rows") == raw["rows"] and "embeddings" in result:
            similarity = cosines(reference, np.load(result["embeddings"]))
            result["min_cosine_vs_raw"] = float(np.min(similarity))
            result["mean_cosine_vs_raw"] = float(np.mean(similarity))


# --------------------------------------------------------------------------- report


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's metrics (the issue's keys) from the contenders' results."""

    def value(name: str, key: str) -> Any:
        return results.get(name, {}).get(key)

    speed = {name: value(name, "rows_per_s") for name in SPEED_KEYS}
    raw, pipe = speed["raw"], speed["pipeline"]
    overhead = (1 / pipe - 1 / raw) * 1e6 if raw and pipe else None
    metrics = {f"{name}_rows_per_s": rate for name, rate in speed.items()}
    metrics.update(
        pipeline_vs_raw=_ratio(pipe, raw),
        pipeline_vs_sentence_transformers=_ratio(pipe, speed["sentence_transformers"]),
        pipeline_vs_beam_mltransform=_ratio(pipe, speed["beam_mltransform"]),
        mp_vs_single=_ratio(speed["pipeline_mp"], pipe),
        pipeline_bf16_vs_fp32=_ratio(speed["pipeline_bf16"], pipe),
        pipeline_bf16_vs_sentence_transformers=_ratio(speed["pipeline_bf16"], speed["sentence_transformers"]),
        overhead_us_per_row=overhead,
        load_s=value("pipeline", "load_s"),
        peak_rss_mb_n=value("pipeline", "peak_rss_mb"),
        peak_rss_mb_10n=value("pipeline_10n", "peak_rss_mb"),
    )
    metrics["rss_10n_vs_n"] = _ratio(metrics["peak_rss_mb_10n"], metrics["peak_rss_mb_n"])
    job_rate = {name: rows_per_job_second(results.get(name, {})) for name in ("pipeline", "pipeline_mp")}
    metrics["mp_vs_single_with_worker_startup"] = _ratio(job_rate["pipeline_mp"], job_rate["pipeline"])
    metrics["pipeline_marginal_rows_per_s"] = marginal_rate(
        results.get("pipeline", {}), results.get("pipeline_10n", {})
    )
    metrics.update(best_at_parity_metrics(results))
    return metrics


def fastest_at_parity(results: dict[str, dict[str, Any]], names: tuple[str, ...], bound: float) -> str | None:
    """The fastest of `names` whose embeddings' min cosine to the float32 reference is at least `bound`.

    A contender that failed, did not run, or was not compared with the
    reference (no `min_cosine_vs_raw`) does not count.

    Returns:
      Its name, or None when none qualifies.
    """

    def at_parity(name: str) -> bool:
        result = results.get(name, {})
        cosine = result.get("min_cosine_vs_raw")
        return bool(result.get("rows_per_s")) and cosine is not None and cosine >= bound

    qualified = [name for name in names if at_parity(name)]
    return max(qualified, key=lambda name: results[name]["rows_per_s"], default=None)


def best_at_parity_metrics(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`pipeline_best_vs_st_best_<bound>`, with the winners `pipeline_best_<bound>` and `st_best_<bound>`.

    For each bound of `PARITY_BOUNDS`: our fastest pipeline over the fastest
    sentence-transformers contender, each the fastest of those within the
    bound; None when either side has none.
    """
    metrics: dict[str, Any] = {}
    for suffix, bound in PARITY_BOUNDS.items():
        ours, theirs = (fastest_at_parity(results, names, bound) for names in (PIPELINE_CONTENDERS, ST_CONTENDERS))
        rate = lambda name: results[name]["rows_per_s"] if name else None  # noqa: E731
        metrics[f"pipeline_best_vs_st_best_{suffix}"] = _ratio(rate(ours), rate(theirs))
        metrics[f"pipeline_best_{suffix}"] = ours
        metrics[f"st_best_{suffix}"] = theirs
    return metrics


def rows_per_job_second(result: dict[str, Any]) -> float | None:
    """Rows/s of a pipeline run with its workers' start-up counted (model load still excluded)."""
    return result["rows"] / result["job_seconds"] if result.get("job_seconds") else None


def marginal_rate(small: dict[str, Any], large: dict[str, Any]) -> float | None:
    """Rows/s of the extra rows between two runs: per-row cost without fixed costs (startup, warm-up)."""
    if "seconds" not in small or "seconds" not in large or large["seconds"] <= small["seconds"]:
        return None
    return (large["rows"] - small["rows"]) / (large["seconds"] - small["seconds"])


def check_targets(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its value and whether it holds (None when not measured)."""
    checks = {}
    for key, comparison, bound in TARGETS:
        value = metrics.get(key)
        met = None if value is None else (value >= bound if comparison == ">=" else value <= bound)
        checks[key] = {"value": value, "target": f"{comparison} {bound}", "met": met}
    return checks


def _versions() -> dict[str, str | None]:
    versions = {}
    for package in ("tensorflow", "tensorflow-text", "tensorflow-hub", "apache-beam", "pyarrow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def steal_seconds(stat_path: str = "/proc/stat") -> float | None:
    """CPU time the hypervisor has given other guests since boot (`steal` in `/proc/stat`), summed over this VM's
    CPUs, in seconds; None where the kernel does not report it.

    On a shared VM the host can take seconds of CPU from a run of a few seconds;
    the difference around a run says how much of its wall time was not its own.
    """
    try:
        with open(stat_path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """The machine a benchmark runs on, now: date, CPU model, flags and cores, load, Python and package versions."""
    cpu_model, flags = cpu.read_cpuinfo()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model,
        "cpu_flags": cpu.listed_flags(flags),
        "cpu_features": cpu.features(flags),
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "versions": _versions(),
    }


def machine_meta(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how the benchmark ran."""
    return {
        **machine(),
        "corpus": args.corpus,
        "rows": args.rows,
        "only": args.only,
        "incremental_rows": args.incremental_rows if INCREMENTAL in args.only else None,
        "incremental_small_rows": args.incremental_small_rows if INCREMENTAL in args.only else None,
        "module": args.module,
        "module_bf16": args.module_bf16,
        "tf_threads": {"intra_op": args.intra_op, "inter_op": args.inter_op},
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _time_split(results: dict[str, dict[str, Any]]) -> list[str]:
    """Where the pipelines' wall time went: model load, inside RunInference, everything else."""
    lines = []
    for name in (*PIPELINE_CONTENDERS, "pipeline_10n"):
        result = results.get(name, {})
        if "run_s" in result:
            lines.append(
                f"  {name}: prepare {result['prepare_s']:.2f}s, then run {result['run_s']:.2f}s = "
                f"worker start-up {result['worker_startup_s']:.2f}s + load {result['worker_load_s']:.2f}s + inference "
                f"{result['inference_s']:.2f}s (summed over workers) + the rest {result['outside_inference_s']:.2f}s"
            )
    first_call = results.get("raw", {}).get("first_call_s")
    if first_call is not None:
        lines.append(f"  raw: the module's first (warm-up) call took {first_call:.2f}s")
    return ([""] + lines) if lines else []


def cpu_line(meta: dict[str, Any]) -> str:
    """The header's CPU line: model name and which of `cpu.KEY_FLAGS` it has."""
    found = meta.get("cpu_features") or {}
    return cpu.summary(meta["cpu"], meta["cores"], {flag: found[flag] for flag in cpu.KEY_FLAGS if flag in found})


def format_table(report: dict[str, Any]) -> str:
    """The printed report: one line per contender, then the ratios against their targets."""
    meta = report["meta"]
    lines = [
        f"hub-embed benchmark, {meta['date']}, "
        f"load average {meta['load_average_at_start']:.2f} at start"
        + (f", {meta['load_average_at_end']:.2f} at end" if meta.get("load_average_at_end") is not None else ""),
        cpu_line(meta),
        f"{meta['rows']} rows of {meta['corpus']}, module {meta['module']}"
        if meta["rows"]
        else f"corpus {meta['corpus']}, module {meta['module']}",
        "",
    ]
    if meta.get("module_bf16") and any(
        TASKS[name].module == BFLOAT16 for name in report["contenders"] if name in TASKS
    ):
        lines.insert(-1, f"bfloat16 module {meta['module_bf16']}")
    if report["contenders"]:
        lines.append(
            f"{'contender':<28}{'rows':>8}{'rows/s':>10}{'timed s':>10}{'load s':>9}{'peak RSS MB':>13}"
            f"{'min cos vs raw':>16}{'mean cos':>11}"
        )
    for name, task in TASKS.items():
        result = report["contenders"].get(name)
        if result is None:
            continue
        if "error" in result:
            lines.append(f"{task.label:<28}  failed: {result['error'].splitlines()[0]}")
            continue
        rss = result.get("tree_peak_rss_mb") if task.contender == "pipeline_mp" else result.get("peak_rss_mb")
        lines.append(
            f"{task.label:<28}{result['rows']:>8}{_fmt(result['rows_per_s']):>10}{_fmt(result['seconds'], 2):>10}"
            f"{_fmt(result.get('load_s'), 2):>9}{_fmt(rss, 0):>13}{_fmt(result.get('min_cosine_vs_raw'), 6):>16}"
            f"{_fmt(result.get('mean_cosine_vs_raw'), 6):>11}"
        )
    lines += _time_split(report["contenders"])
    if report.get("incremental"):
        lines += [""] + incremental.format_lines(report["incremental"])
    lines += ["", f"{'metric':<{METRIC_WIDTH}}{'value':>10}  target"]
    for key, check in report["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        lines.append(f"{key:<{METRIC_WIDTH}}{_fmt(check['value'], 3):>10}  {check['target']} ({verdict})")
    lines.append(f"{'overhead_us_per_row':<{METRIC_WIDTH}}{_fmt(report['overhead_us_per_row']):>10}")
    lines.append(
        f"{'mp_vs_single_with_worker_startup':<{METRIC_WIDTH}}{_fmt(report['mp_vs_single_with_worker_startup'], 3):>10}"
    )
    for key in ("peak_rss_mb_n", "peak_rss_mb_10n", "pipeline_marginal_rows_per_s"):
        lines.append(f"{key:<{METRIC_WIDTH}}{_fmt(report[key], 0):>10}")
    for suffix, bound in PARITY_BOUNDS.items():
        ours, theirs = report.get(f"pipeline_best_{suffix}"), report.get(f"st_best_{suffix}")
        lines.append(f"fastest at min cos >= {bound}: ours {_fmt(ours)}, sentence-transformers {_fmt(theirs)}")
    busy = BUSY_LOAD_PER_CORE * (meta["cores"] or 1)
    own_threads = (meta.get("tf_threads") or {}).get("intra_op", 0)  # the contenders' own load at the end
    if meta["load_average_at_start"] > busy:
        lines.append("\nWARNING: the machine was busy when the benchmark started; timings are noisy.")
    elif (meta.get("load_average_at_end") or 0) > own_threads + busy:
        lines.append("\nWARNING: other work ran on the machine during the benchmark; timings are noisy.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="JSONL with a 'text' field, or plain text, one record per line")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="N: rows per contender (10 x N for pipeline_10n); needed unless only incremental runs",
    )
    parser.add_argument("--json", default=None, help="write the report here")
    choices = (*TASKS, *GROUPS)
    parser.add_argument("--only", default=",".join(choices), help=f"comma-separated subset of: {', '.join(choices)}")
    parser.add_argument(
        "--incremental-rows",
        type=int,
        default=incremental.DEFAULT_ROWS,
        help="N of the incremental scenario (default: %(default)s)",
    )
    parser.add_argument(
        "--incremental-small-rows",
        type=int,
        default=incremental.DEFAULT_SMALL_ROWS,
        help="the incremental scenario's comparison size, for the cost of an unchanged row "
        "(default: %(default)s; 0: none)",
    )
    parser.add_argument("--module", default=DEFAULT_MODULE, help="TF Hub module directory (default: %(default)s)")
    parser.add_argument(
        "--module-bf16",
        default=DEFAULT_MODULE_BF16,
        help="the bfloat16 module, for raw_bf16 and the *_bf16 pipelines (default: %(default)s)",
    )
    parser.add_argument(
        "--bench-python",
        default=None,
        help=f"interpreter with sentence-transformers (default: {DEFAULT_BENCH_PYTHON} if present)",
    )
    parser.add_argument(
        "--bench-onnx-python",
        default=None,
        help="interpreter with sentence-transformers' ONNX backend (Optimum, ONNX Runtime; "
        f"default: {DEFAULT_BENCH_ONNX_PYTHON} if present)",
    )
    parser.add_argument("--intra-op", type=int, default=2, help="TensorFlow/PyTorch intra-op threads")
    parser.add_argument("--inter-op", type=int, default=1, help="TensorFlow/PyTorch inter-op threads")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds per contender")
    parser.add_argument("--profile", default=None, help="directory for one cProfile file per contender")
    parser.add_argument("--keep-workdir", action="store_true", help="keep inputs, outputs and logs")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(choices))
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(choices)}")
    if args.rows is None and any(name in TASKS for name in args.only):
        parser.error("--rows is required (only `--only incremental` runs without it)")
    if args.rows is not None and args.rows < 1:
        parser.error("--rows must be positive")
    if INCREMENTAL in args.only:
        if args.incremental_rows < 100:
            parser.error("--incremental-rows must be at least 100")
        if args.incremental_small_rows and not 100 <= args.incremental_small_rows < args.incremental_rows:
            parser.error("--incremental-small-rows must be 0, or at least 100 and below --incremental-rows")
    if not os.path.isfile(os.path.join(args.module, "saved_model.pb")):
        parser.error(f"no module at {args.module}; build it with `make module`")
    args.module = os.path.abspath(args.module)
    args.module_bf16 = os.path.abspath(args.module_bf16)  # checked per task: a missing one fails its tasks only
    return args


def run_all(args: argparse.Namespace, workdir: str) -> dict[str, dict[str, Any]]:
    """Runs the selected tasks in `TASKS` order; returns their results by name."""
    selected = [n for n in TASKS if n in args.only]
    if not selected:
        return {}
    texts = corpus.read_texts(args.corpus, args.rows * max(TASKS[n].rows_factor for n in selected))
    inputs: dict[int, str] = {}
    pythons = interpreters(args)
    results = {}
    for name in selected:
        task = TASKS[name]
        rows = args.rows * task.rows_factor
        if rows not in inputs:
            inputs[rows] = write_input(texts[:rows], os.path.join(workdir, f"input-{rows}.jsonl"))
        python = pythons[task.interpreter]
        why_not = MISSING_INTERPRETER[task.interpreter] if python is None else missing_module(task, args)
        if why_not:
            results[name] = {"error": why_not}
            print(f"skipping {name}: {why_not}", file=sys.stderr, flush=True)
            continue
        print(f"running {name} on {rows} rows ...", end=" ", file=sys.stderr, flush=True)
        (results[name], seconds) = contenders.timed(lambda: run_task(name, python, inputs[rows], args, workdir))
        print(f"{'failed' if 'error' in results[name] else 'done'} in {seconds:.0f}s", file=sys.stderr, flush=True)
    add_parity(results)
    return results


def run_incremental(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """The `incremental` group (`benchmarks.incremental`); `{"error": ...}` when a command failed."""
    print(f"running incremental on {args.incremental_rows} rows ...", file=sys.stderr, flush=True)
    taskdir = os.path.join(workdir, INCREMENTAL)
    os.makedirs(taskdir)
    try:
        (result, seconds) = contenders.timed(
            lambda: incremental.run_incremental(
                incremental.read_paragraphs(args.corpus),
                args.incremental_rows,
                args.incremental_small_rows,
                args.module,
                taskdir,
                contender_env(args.intra_op, args.inter_op),
                REPO_ROOT,
                timeout=args.timeout,
            )
        )
    except incremental.CommandError as e:
        print("failed", file=sys.stderr, flush=True)
        return {"error": str(e)}
    print(f"incremental done in {seconds:.0f}s", file=sys.stderr, flush=True)
    if not (result["counts_ok"] and result["bit_identical"]):
        result["error"] = "wrong counts or vectors: " + json.dumps(
            {k: v for k, v in result["checks"].items() if v.get("wrong") or v.get("ok") is False}
        )
    return result


def build_report(
    meta: dict[str, Any],
    results: dict[str, dict[str, Any]],
    incremental_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: metrics first, then targets, meta, every result and the errors."""
    metrics = summarize(results)
    metrics.update((incremental_result or {}).get("metrics") or dict.fromkeys(INCREMENTAL_KEYS))
    errors = {name: r["error"] for name, r in results.items() if "error" in r}
    if incremental_result and "error" in incremental_result:
        errors[INCREMENTAL] = incremental_result["error"]
    return {
        **metrics,
        "targets": check_targets(metrics),
        "meta": meta,
        "contenders": {name: {k: v for k, v in r.items() if k != "embeddings"} for name, r in results.items()},
        INCREMENTAL: incremental_result,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 1 when a contender failed."""
    args = parse_args(argv)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    meta = machine_meta(args)
    workdir = tempfile.mkdtemp(prefix="hub-embed-bench-")
    try:
        results = run_all(args, workdir)
        incremental_result = run_incremental(args, workdir) if INCREMENTAL in args.only else None
        meta["load_average_at_end"] = os.getloadavg()[0]  # the contenders' threads, plus others' work during the run
        report = build_report(meta, results, incremental_result)
    finally:
        if args.keep_workdir:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=False)
            f.write("\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
