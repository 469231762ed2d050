"""`python -m benchmarks.incremental`: a second run that reuses the first run's table, against a full run.

    python -m benchmarks.incremental --corpus benchmarks/data/docstrings.jsonl --rows 50000 --small-rows 10000

Whole `python -m pipelines.embed` commands, timed from outside, on a scenario
built from the corpus (`benchmarks.incremental_scenario`); the report goes to
`benchmarks/results/incremental.json` (`--json`). docs/benchmarks.md says what
is measured and why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import corpus, harness
from benchmarks.incremental_checks import TableView, count_mismatches, counts_of, read_back, verify_run
from benchmarks.incremental_scenario import SEED, build_scenario, read_paragraphs, row_id, write_rows
from benchmarks.tables import fmt, markdown_table, verdict
from pipelines.embedding.config import DEFAULT_MODULE

BENCHMARK = "incremental"
DEFAULT_ROWS = 50_000
DEFAULT_SMALL_ROWS = 10_000
# (metric, comparison, bound): the benchmark's targets.
TARGETS = (
    ("incremental_vs_full_wall", ">=", 5.0),
    ("incremental_vs_full_work", ">=", 15.0),
    ("incremental_us_per_unchanged_row", "<=", 150.0),
)
# The report's keys (`metrics`).
METRIC_KEYS = (
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


def embed_command(python: str, input_path: str, output: str, module: str, reuse: str | None = None) -> list[str]:
    """The whole command of one run (DirectRunner, in-process)."""
    cmd = [
        python,
        "-m",
        "pipelines.embed",
        "--input",
        input_path,
        "--id-field",
        "id",
        "--output",
        output,
        "--module",
        module,
    ]
    return cmd + (["--reuse", reuse] if reuse else [])


def run_incremental(
    paragraphs: Sequence[str],
    n: int,
    small_n: int,
    module: str,
    workdir: str,
    env: dict[str, str],
    cwd: str,
    python: str = sys.executable,
    timeout: float = 3600,
    fixed_repeats: int = 2,
    log: Callable[[str], None] | None = None,
    launch: Callable[[list[str], str], float] | None = None,
) -> dict[str, Any]:
    """Runs the incremental scenario at N (and the all-reused comparison at `small_n`, 0: none).

    Args:
      paragraphs: the corpus's distinct texts (`read_paragraphs`).
      n, small_n: the scenario's sizes.
      module: the module directory.
      workdir: an empty directory for inputs, tables and logs.
      env, cwd, python, timeout: how the commands run.
      fixed_repeats: how many times the 1-row commands run (at the start, then at the end).
      log: progress messages (default: stderr).
      launch: runs one command (argv, log path) and returns its seconds; default: a
        subprocess timed from outside (`harness.run_logged`). Tests pass an in-process one.

    Returns:
      The result: `metrics` (the report's keys), `scenario` sizes, `commands`
      (each command's wall seconds and counts), `fixed_s`, `checks`, `counts_ok`, `bit_identical`.

    Raises:
      harness.CommandError: a command failed (the message names it).
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    launch = launch or (lambda cmd, log_path: harness.run_logged(cmd, log_path, env, timeout, cwd))
    commands: dict[str, dict[str, Any]] = {}
    fixed: dict[str, list[float]] = {"full": [], "reuse": [], "reuse_hit": []}

    def run(name: str, rows: Sequence[tuple[str, str]], reuse: str | None = None) -> tuple[TableView, float]:
        base = os.path.join(workdir, name)
        input_path = write_rows(rows, base + ".jsonl")
        cmd = embed_command(python, input_path, base + "-table", module, reuse)
        log(f"  incremental: {name} ({len(rows)} rows{', reuse' if reuse else ''}) ...")
        try:
            seconds = launch(cmd, base + ".log")
        except harness.CommandError as e:
            raise harness.CommandError(f"{name}: {e}") from None
        view = read_back(base + "-table")
        commands[name] = {
            "rows": len(rows),
            "wall_s": seconds,
            "counts": counts_of(view),
            "reuse": view.manifest.get("reuse"),
        }
        log(f"  incremental: {name} took {seconds:.2f}s")
        return view, seconds

    def measure_fixed(tag: str) -> None:
        a, b = [(row_id(0), paragraphs[0])], [(row_id(0), paragraphs[1])]
        _, full = run(f"fixed-full-{tag}", a)
        table = os.path.join(workdir, f"fixed-full-{tag}-table")
        _, miss = run(f"fixed-reuse-{tag}", b, reuse=table)
        _, hit = run(f"fixed-reuse-hit-{tag}", a, reuse=table)
        fixed["full"].append(full)
        fixed["reuse"].append(miss)
        fixed["reuse_hit"].append(hit)

    scenario = build_scenario(paragraphs, n)
    small = build_scenario(paragraphs, small_n) if small_n else None
    checks: dict[str, Any] = {}
    counts_ok: dict[str, bool] = {}

    def check_counts(name: str, view: TableView, expected: dict[str, int]) -> None:
        wrong = count_mismatches(view, expected)
        checks[f"{name}_counts"] = {"expected": expected, "wrong": wrong}
        counts_ok[name] = not wrong

    if fixed_repeats:
        measure_fixed("start")
    runs = [("", scenario)] + ([("small-", small)] if small else [])
    views: dict[str, TableView] = {}
    for prefix, sc in runs:
        run1, _ = run(f"{prefix}run1", sc.run1)
        run1_dir = os.path.join(workdir, f"{prefix}run1-table")
        run2, _ = run(f"{prefix}run2", sc.run2, reuse=run1_dir)
        again, _ = run(f"{prefix}all-reused", sc.run1, reuse=run1_dir)
        check_counts(f"{prefix}run1", run1, sc.expected_run1())
        check_counts(f"{prefix}run2", run2, sc.expected_run2())
        check_counts(f"{prefix}all-reused", again, sc.expected_all_reused())
        views.update({f"{prefix}run1": run1, f"{prefix}run2": run2, f"{prefix}all-reused": again})
    # One fresh run (no reuse) over the texts that run 2 embedded, of both scenarios.
    fresh_rows = [
        (f"fresh-{i:07d}", text)
        for i, text in enumerate(dict.fromkeys(text for _, sc in runs for text in sc.fresh_texts()))
    ]
    fresh, _ = run("fresh", fresh_rows)
    for prefix, sc in runs:
        for name, rows in (("run2", sc.run2), ("all-reused", sc.run1)):
            view, reference = views[prefix + name], views[prefix + "run1"]
            checks[f"{prefix}{name}_vectors"] = verify_run(rows, view, reference, sc.run1, fresh, fresh_rows)
    for repeat in range(fixed_repeats - 1):
        measure_fixed(f"end-{repeat}")
    result = {
        "rows": n,
        "small_rows": small_n or None,
        "seed": SEED,
        "scenario": scenario.sizes(),
        "small_scenario": small.sizes() if small else None,
        "fixed_s": fixed,
        "commands": commands,
        "checks": checks,
        "counts_ok": all(counts_ok.values()),
        "bit_identical": all(c["ok"] for k, c in checks.items() if k.endswith("_vectors")),
    }
    result["metrics"] = metrics(result)
    return result


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The report's incremental keys from a `run_incremental` result (None where not measured)."""
    wall = {name: c["wall_s"] for name, c in result.get("commands", {}).items()}
    fixed_full = min(result["fixed_s"]["full"], default=None)
    fixed_reuse = min(result["fixed_s"]["reuse"], default=None)
    fixed_hit = min(result["fixed_s"].get("reuse_hit", []), default=None)
    n, small_n = result["rows"], result.get("small_rows")

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def sub(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    run1, run2 = wall.get("run1"), wall.get("run2")
    work1, work2 = sub(run1, fixed_full), sub(run2, fixed_reuse)
    per_row = div(sub(wall.get("all-reused"), fixed_hit), n)
    per_row_small = div(sub(wall.get("small-all-reused"), fixed_hit), small_n)
    marginal = None
    if small_n and "all-reused" in wall and "small-all-reused" in wall and n != small_n:
        marginal = (wall["all-reused"] - wall["small-all-reused"]) / (n - small_n)
    sizes = result.get("scenario") or {}
    from_run2 = None
    if work1 is not None and work2 is not None and sizes.get("unchanged"):
        contents = sizes["changed"] + sizes["added"]
        from_run2 = (work2 - contents * work1 / n) / sizes["unchanged"]
    us = lambda seconds: seconds * 1e6 if seconds is not None else None  # noqa: E731
    return {
        "incremental_vs_full_wall": div(run1, run2),
        "incremental_vs_full_work": div(work1, work2) if work2 and work2 > 0 else None,
        "incremental_us_per_unchanged_row": us(per_row),
        "incremental_us_per_unchanged_row_small": us(per_row_small),
        "incremental_us_per_unchanged_row_marginal": us(marginal),
        "incremental_us_per_unchanged_row_run2": us(from_run2),
        "incremental_fixed_full_s": fixed_full,
        "incremental_fixed_reuse_s": fixed_reuse,
        "incremental_fixed_reuse_hit_s": fixed_hit,
        "incremental_run1_s": run1,
        "incremental_run2_s": run2,
        "incremental_counts_ok": result.get("counts_ok"),
        "incremental_bit_identical": result.get("bit_identical"),
    }


def format_lines(result: dict[str, Any]) -> list[str]:
    """The printed part of the report: commands, counts and checks."""
    if "metrics" not in result:
        return [f"incremental: failed: {result.get('error', '?').splitlines()[0]}"]
    m = result["metrics"]
    lines = [
        f"incremental scenario, N = {result['rows']}: {json.dumps(result['scenario'])}",
        "",
        f"{'command':<22}{'rows':>8}{'wall s':>9}{'embedded':>10}{'reused':>9}{'dedup':>7}{'contents':>10}",
    ]
    for name, c in result["commands"].items():
        k = c["counts"]
        lines.append(
            f"{name:<22}{c['rows']:>8}{c['wall_s']:>9.2f}{fmt(k.get('rows_embedded')):>10}{fmt(k.get('rows_reused')):>9}"
            f"{fmt(k.get('rows_deduplicated')):>7}{fmt(k.get('contents_embedded')):>10}"
        )
    for key, check in result["checks"].items():
        if key.endswith("_counts") and check["wrong"]:
            lines.append(f"  {key}: WRONG {json.dumps(check['wrong'])}")
        elif key.endswith("_vectors"):
            lines.append(f"  {_vectors_line(key, check)}")
    lines.append(
        f"  fixed cost (1-row command, min of {len(result['fixed_s']['full'])}): full {fmt(m['incremental_fixed_full_s'], 2)}s, "
        f"with --reuse {fmt(m['incremental_fixed_reuse_s'], 2)}s (1 miss), {fmt(m['incremental_fixed_reuse_hit_s'], 2)}s "
        f"(1 hit); counts {'ok' if result['counts_ok'] else 'WRONG'}, "
        f"vectors {'ok' if result['bit_identical'] else 'FAILED'}"
    )
    for key in (
        "incremental_us_per_unchanged_row_small",
        "incremental_us_per_unchanged_row_marginal",
        "incremental_us_per_unchanged_row_run2",
    ):
        lines.append(f"  {key}: {fmt(m[key], 1)}")
    return lines


def check_targets(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each of `TARGETS` with its value and whether it holds (None when not measured)."""
    return harness.check_targets(metrics, TARGETS)


# The metrics shown after the targets: (key, label, digits).
OTHER_METRICS = (
    ("incremental_us_per_unchanged_row_small", "µs per unchanged row at the small N", 1),
    ("incremental_us_per_unchanged_row_marginal", "µs per unchanged row, marginal (small N to N)", 1),
    ("incremental_us_per_unchanged_row_run2", "µs per unchanged row, estimated from run 2", 1),
    ("incremental_fixed_full_s", "fixed cost of a full command, s", 2),
    ("incremental_fixed_reuse_s", "fixed cost with --reuse, 1 miss, s", 2),
    ("incremental_fixed_reuse_hit_s", "fixed cost with --reuse, 1 hit, s", 2),
)


def _vectors_line(key: str, check: dict[str, Any]) -> str:
    """One line of a run's vector checks."""
    cos = check["new_rows_min_cosine"]
    return (
        f"{key}: reused {check['reused_rows_bit_identical']}/{check['reused_rows_checked']} bit-identical, "
        f"duplicate groups {check['duplicate_groups_bit_identical']}/{check['duplicate_groups']} equal, new rows "
        f"{check['new_rows_checked']} (min cos {fmt(cos, 6)}, {fmt(check['new_rows_bit_identical'])} bit-identical "
        f"to a fresh run), content_hash mismatches {check['content_hash_mismatches']}: "
        f"{'ok' if check['ok'] else 'FAILED'}"
    )


def markdown(result: dict[str, Any]) -> str:
    """A `run_incremental` result in Markdown: the commands with their counts, the checks, the metrics."""
    if "metrics" not in result:
        return f"The incremental run failed: {result.get('error', '?').splitlines()[0]}"
    sizes = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in result["scenario"].items())
    parts = [f"Scenario at N = {result['rows']}: {sizes}."]
    rows = []
    for name, command in result["commands"].items():
        counts = command["counts"]
        rows.append(
            [
                name,
                str(command["rows"]),
                fmt(command["wall_s"], 2),
                *(fmt(counts.get(key)) for key in ("rows_embedded", "rows_reused", "rows_deduplicated")),
                fmt(counts.get("contents_embedded")),
            ]
        )
    header = ["command", "rows", "wall s", "embedded", "reused", "deduplicated", "contents embedded"]
    parts.append(markdown_table(header, rows))
    checks = [f"- {_vectors_line(key, c)}" for key, c in result["checks"].items() if key.endswith("_vectors")]
    checks += [
        f"- {key}: WRONG {json.dumps(c['wrong'])}"
        for key, c in result["checks"].items()
        if key.endswith("_counts") and c["wrong"]
    ]
    counts = "every count as planted" if result["counts_ok"] else "counts WRONG"
    parts.append(f"Checks: {counts}.")
    if checks:
        parts.append("\n".join(checks))
    m = result["metrics"]
    table = [
        [f"`{key}`", fmt(check["value"], 1), check["target"], verdict(check["met"])]
        for key, check in check_targets(m).items()
    ]
    table += [[label, fmt(m[key], digits), "", ""] for key, label, digits in OTHER_METRICS]
    parts.append(markdown_table(["metric", "value", "target", ""], table))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 1 when a count or a vector is wrong."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.incremental", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=corpus.DEFAULT_OUTPUT)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--small-rows", type=int, default=DEFAULT_SMALL_ROWS, help="0: no comparison run")
    parser.add_argument("--module", default=DEFAULT_MODULE)
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    meta = {
        **harness.machine(),
        "corpus": args.corpus,
        "rows": args.rows,
        "small_rows": args.small_rows,
        "module": args.module,
        "tf_threads": {"intra_op": 2, "inter_op": 1},
        "command": harness.command_line("benchmarks.incremental", argv),
    }
    workdir = tempfile.mkdtemp(prefix="hub-embed-incremental-")
    try:
        result = run_incremental(
            read_paragraphs(args.corpus),
            args.rows,
            args.small_rows,
            os.path.abspath(args.module),
            workdir,
            harness.contender_env(2, 1),
            harness.REPO_ROOT,
        )
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    harness.finish(meta)
    print("\n".join(format_lines(result)))
    print(json.dumps(result["metrics"], indent=2))
    report = {**result, "targets": check_targets(result["metrics"]), "meta": meta}
    harness.write_result(BENCHMARK, report, args.json)
    return 0 if result["counts_ok"] and result["bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
