"""`python -m benchmarks.text`: the text pipeline's speed against the raw module, sentence-transformers and stock Beam.

    python -m benchmarks.text --corpus benchmarks/data/docstrings.jsonl --rows 2000 [--only ...] [--skip ...]

Every contender embeds the same first N texts of the corpus in a process of
its own (`benchmarks.text_contenders`); the report goes to
`benchmarks/results/text.json` (`--json`). docs/benchmarks.md says what each
contender and each figure is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from typing import Any

from benchmarks import corpus, harness, incremental, text_report
from benchmarks.harness import REPO_ROOT
from benchmarks.text_report import BENCH, BENCH_ONNX, BFLOAT16, GROUPS, INCREMENTAL, MAIN, TASKS, Task
from pipelines.embedding.config import DEFAULT_MODULE

BENCHMARK = "text"
DEFAULT_BENCH_PYTHON = os.path.join(".venv-bench", "bin", "python")
DEFAULT_BENCH_ONNX_PYTHON = os.path.join(".venv-bench-onnx", "bin", "python")
DEFAULT_MODULE_BF16 = "build/modules/all-minilm-l6-v2-bf16/1"
DEFAULT_TIMEOUT_S = 3600


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


def run_task(name: str, python: str, input_path: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Runs one task in its own process.

    Returns:
      The contender's result, or `{"error": ...}` with the tail of its log.
    """
    task = TASKS[name]
    taskdir = os.path.join(workdir, name)
    os.makedirs(taskdir)
    result_path = os.path.join(taskdir, harness.RESULT_FILE)
    module = task_module(task, args)
    cmd = [
        python,
        "-m",
        "benchmarks.text_contenders",
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
    env = harness.contender_env(args.intra_op, args.inter_op)
    result = harness.run_contender_process(cmd, taskdir, env, args.timeout, result_path)
    if "error" in result:
        return result
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["embeddings"] = os.path.join(taskdir, "embeddings.npy")
    if task.interpreter == MAIN:
        result["module"] = module
    return result


def machine_meta(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Where and how the benchmark ran."""
    return {
        **harness.machine(),
        "corpus": args.corpus,
        "rows": args.rows,
        "only": args.only,
        "incremental_rows": args.incremental_rows if INCREMENTAL in args.only else None,
        "incremental_small_rows": args.incremental_small_rows if INCREMENTAL in args.only else None,
        "module": args.module,
        "module_bf16": args.module_bf16,
        "tf_threads": {"intra_op": args.intra_op, "inter_op": args.inter_op},
        "command": harness.command_line("benchmarks.text", argv),
    }


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.text", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="JSONL with a 'text' field, or plain text, one record per line")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="N: rows per contender (10 x N for pipeline_10n); needed unless only incremental runs",
    )
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    choices = (*TASKS, *GROUPS)
    parser.add_argument("--only", default=",".join(choices), help=f"comma-separated subset of: {', '.join(choices)}")
    parser.add_argument("--skip", default="", help="comma-separated names to leave out of --only")
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
    skip = [name.strip() for name in args.skip.split(",") if name.strip()]
    args.only = [name.strip() for name in args.only.split(",") if name.strip() and name.strip() not in skip]
    unknown = sorted((set(args.only) | set(skip)) - set(choices))
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
        (results[name], seconds) = harness.timed(lambda: run_task(name, python, inputs[rows], args, workdir))
        print(f"{'failed' if 'error' in results[name] else 'done'} in {seconds:.0f}s", file=sys.stderr, flush=True)
    text_report.add_parity(results)
    return results


def run_incremental(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """The `incremental` group (`benchmarks.incremental`); `{"error": ...}` when a command failed."""
    print(f"running incremental on {args.incremental_rows} rows ...", file=sys.stderr, flush=True)
    taskdir = os.path.join(workdir, INCREMENTAL)
    os.makedirs(taskdir)
    try:
        (result, seconds) = harness.timed(
            lambda: incremental.run_incremental(
                incremental.read_paragraphs(args.corpus),
                args.incremental_rows,
                args.incremental_small_rows,
                args.module,
                taskdir,
                harness.contender_env(args.intra_op, args.inter_op),
                REPO_ROOT,
                timeout=args.timeout,
            )
        )
    except harness.CommandError as e:
        print("failed", file=sys.stderr, flush=True)
        return {"error": str(e)}
    print(f"incremental done in {seconds:.0f}s", file=sys.stderr, flush=True)
    if not (result["counts_ok"] and result["bit_identical"]):
        result["error"] = "wrong counts or vectors: " + json.dumps(
            {k: v for k, v in result["checks"].items() if v.get("wrong") or v.get("ok") is False}
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 1 when a contender failed."""
    args = parse_args(argv)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    meta = machine_meta(args, argv)
    workdir = tempfile.mkdtemp(prefix="hub-embed-bench-")
    try:
        results = run_all(args, workdir)
        incremental_result = run_incremental(args, workdir) if INCREMENTAL in args.only else None
        harness.finish(meta)  # the load at the end: the contenders' threads, plus others' work
        report = text_report.build_report(meta, results, incremental_result)
    finally:
        if args.keep_workdir:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(text_report.format_table(report))
    harness.write_result(BENCHMARK, report, args.json)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
