"""The text benchmark's tasks, its report's metrics and targets, and its printed and Markdown tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks import harness, incremental
from benchmarks.tables import fmt, markdown_table, verdict

METRIC_WIDTH = 40
# Task.interpreter: this Python, the PyTorch one (`.venv-bench`), the ONNX Runtime one (`.venv-bench-onnx`).
MAIN, BENCH, BENCH_ONNX = "main", "bench", "bench_onnx"
# Task.module: `--module` or `--module-bf16`.
FLOAT32, BFLOAT16 = "float32", "bfloat16"


@dataclasses.dataclass(frozen=True)
class Task:
    """One measurement: a contender on N (or a multiple of N) rows.

    Attributes:
      contender: name in `benchmarks.text_contenders.CONTENDERS`.
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
# (metric, comparison, bound): the text benchmark's targets, then the incremental group's.
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
    *incremental.TARGETS,
)
# The report's metrics after the targets, in the printed order (name, digits).
OTHER_METRICS = (
    ("overhead_us_per_row", 1),
    ("mp_vs_single_with_worker_startup", 3),
    ("peak_rss_mb_n", 0),
    ("peak_rss_mb_10n", 0),
    ("pipeline_marginal_rows_per_s", 0),
)


# --------------------------------------------------------------------------- metrics


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
            similarity = harness.cosines(reference, np.load(result["embeddings"]))
            result["min_cosine_vs_raw"] = float(np.min(similarity))
            result["mean_cosine_vs_raw"] = float(np.mean(similarity))


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's metrics from the contenders' results (None where a contender failed or did not run)."""

    def value(name: str, key: str) -> Any:
        return results.get(name, {}).get(key)

    ratio = harness.ratio
    speed = {name: value(name, "rows_per_s") for name in SPEED_KEYS}
    raw, pipe = speed["raw"], speed["pipeline"]
    overhead = (1 / pipe - 1 / raw) * 1e6 if raw and pipe else None
    metrics = {f"{name}_rows_per_s": rate for name, rate in speed.items()}
    metrics.update(
        pipeline_vs_raw=ratio(pipe, raw),
        pipeline_vs_sentence_transformers=ratio(pipe, speed["sentence_transformers"]),
        pipeline_vs_beam_mltransform=ratio(pipe, speed["beam_mltransform"]),
        mp_vs_single=ratio(speed["pipeline_mp"], pipe),
        pipeline_bf16_vs_fp32=ratio(speed["pipeline_bf16"], pipe),
        pipeline_bf16_vs_sentence_transformers=ratio(speed["pipeline_bf16"], speed["sentence_transformers"]),
        overhead_us_per_row=overhead,
        load_s=value("pipeline", "load_s"),
        peak_rss_mb_n=value("pipeline", "peak_rss_mb"),
        peak_rss_mb_10n=value("pipeline_10n", "peak_rss_mb"),
    )
    metrics["rss_10n_vs_n"] = ratio(metrics["peak_rss_mb_10n"], metrics["peak_rss_mb_n"])
    job_rate = {name: rows_per_job_second(results.get(name, {})) for name in ("pipeline", "pipeline_mp")}
    metrics["mp_vs_single_with_worker_startup"] = ratio(job_rate["pipeline_mp"], job_rate["pipeline"])
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
        metrics[f"pipeline_best_vs_st_best_{suffix}"] = harness.ratio(rate(ours), rate(theirs))
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
    """Each of `TARGETS` with its value and whether it holds (None when not measured)."""
    return harness.check_targets(metrics, TARGETS)


def build_report(
    meta: dict[str, Any],
    results: dict[str, dict[str, Any]],
    incremental_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: metrics first, then targets, meta, every result and the errors."""
    metrics = summarize(results)
    metrics.update((incremental_result or {}).get("metrics") or dict.fromkeys(incremental.METRIC_KEYS))
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


# --------------------------------------------------------------------------- tables


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


def _peak_rss(task: Task, result: dict[str, Any]) -> float | None:
    """A contender's peak RSS: the process tree's for two worker processes, else the process's."""
    return result.get("tree_peak_rss_mb") if task.contender == "pipeline_mp" else result.get("peak_rss_mb")


def format_table(report: dict[str, Any]) -> str:
    """The printed report: one line per contender, then the ratios against their targets."""
    meta = report["meta"]
    lines = [
        f"hub-embed benchmark, {meta['date']}, "
        f"load average {meta['load_average_at_start']:.2f} at start"
        + (f", {meta['load_average_at_end']:.2f} at end" if meta.get("load_average_at_end") is not None else ""),
        harness.cpu_line(meta),
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
        lines.append(
            f"{task.label:<28}{result['rows']:>8}{fmt(result['rows_per_s']):>10}{fmt(result['seconds'], 2):>10}"
            f"{fmt(result.get('load_s'), 2):>9}{fmt(_peak_rss(task, result), 0):>13}"
            f"{fmt(result.get('min_cosine_vs_raw'), 6):>16}{fmt(result.get('mean_cosine_vs_raw'), 6):>11}"
        )
    lines += _time_split(report["contenders"])
    if report.get("incremental"):
        lines += [""] + incremental.format_lines(report["incremental"])
    lines += ["", f"{'metric':<{METRIC_WIDTH}}{'value':>10}  target"]
    for key, check in report["targets"].items():
        lines.append(f"{key:<{METRIC_WIDTH}}{fmt(check['value'], 3):>10}  {check['target']} ({verdict(check['met'])})")
    for key, digits in OTHER_METRICS:
        lines.append(f"{key:<{METRIC_WIDTH}}{fmt(report[key], digits):>10}")
    for suffix, bound in PARITY_BOUNDS.items():
        ours, theirs = report.get(f"pipeline_best_{suffix}"), report.get(f"st_best_{suffix}")
        lines.append(f"fastest at min cos >= {bound}: ours {fmt(ours)}, sentence-transformers {fmt(theirs)}")
    own_threads = (meta.get("tf_threads") or {}).get("intra_op", 0)  # the contenders' own load at the end
    busy = harness.BUSY_LOAD_PER_CORE * (meta["cores"] or 1)
    if harness.busy_at_start(meta):
        lines.append("\nWARNING: the machine was busy when the benchmark started; timings are noisy.")
    elif (meta.get("load_average_at_end") or 0) > own_threads + busy:
        lines.append("\nWARNING: other work ran on the machine during the benchmark; timings are noisy.")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The report's tables in Markdown: contenders, targets, the other metrics, and the incremental group's."""
    meta = report["meta"]
    sizes = f"N = {meta['rows']} rows of `{meta['corpus']}`" if meta.get("rows") else f"corpus `{meta['corpus']}`"
    parts = [
        f"{sizes}; TensorFlow threads {meta['tf_threads']['intra_op']} intra-op / {meta['tf_threads']['inter_op']} inter-op."
    ]
    rows = []
    for name, task in TASKS.items():
        result = report["contenders"].get(name)
        if result is None:
            continue
        if "error" in result:
            rows.append([task.label, "failed: " + result["error"].splitlines()[0], "", "", "", "", "", ""])
            continue
        rows.append(
            [
                task.label,
                str(result["rows"]),
                fmt(result["rows_per_s"]),
                fmt(result["seconds"], 2),
                fmt(result.get("load_s"), 2),
                fmt(_peak_rss(task, result), 0),
                fmt(result.get("min_cosine_vs_raw"), 6),
                fmt(result.get("mean_cosine_vs_raw"), 6),
            ]
        )
    if rows:
        header = ["contender", "rows", "rows/s", "timed s", "load s", "peak RSS MB", "min cos vs raw", "mean cos"]
        parts.append(markdown_table(header, rows))
    measured_incremental = bool(report.get(INCREMENTAL))
    incremental_keys = {key for key, _, _ in incremental.TARGETS}
    targets = [
        [f"`{key}`", fmt(check["value"], 3), check["target"], verdict(check["met"])]
        for key, check in report["targets"].items()
        if measured_incremental or key not in incremental_keys
    ]
    targets += [[f"`{key}`", fmt(report[key], digits), "", ""] for key, digits in OTHER_METRICS]
    for suffix, bound in PARITY_BOUNDS.items():
        ours, theirs = report.get(f"pipeline_best_{suffix}"), report.get(f"st_best_{suffix}")
        targets.append(
            [f"fastest at min cos >= {bound}", f"ours {fmt(ours)}, sentence-transformers {fmt(theirs)}", "", ""]
        )
    parts.append(markdown_table(["metric", "value", "target", ""], targets))
    if measured_incremental:
        parts.append(incremental.markdown(report[INCREMENTAL]))
    return "\n\n".join(parts)
