"""Report benchmark: what `write_report` costs on a large MiniLM table (seconds, peak memory, page size).

    python -m benchmarks.report --rows 200000

The table is the publish benchmark's `full` table (`benchmarks.publish.make_tables`: `--rows` distinct
corpus texts embedded by the real pipeline with `--module`), kept in `--workdir` (shared with that
benchmark, so either one reuses the other's tables), or a committed table given by `--table`.
Each report runs in a process of its own: it imports the report's modules, then times
`write_report(table, ReportOptions(), output=WORKDIR/report/report.html)` once (the first call) and `--repeats`
more times (their median). Peak RSS is the process's kernel high-water mark after the imports and
after the first call; their difference is what the report itself added.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from benchmarks import corpus, harness, publish
from benchmarks.tables import fmt, markdown_table

BENCHMARK = "report"
DEFAULT_ROWS = 200_000
DEFAULT_REPEATS = 3
# The publish benchmark's held-out queries: its `full` table is made of the texts after them.
PUBLISH_QUERIES = 200
TIMEOUT_S = 3600


def publish_full_table(corpus_path: str, rows: int, module: str, workdir: str) -> str:
    """The publish benchmark's `full` table of `rows` rows: made as `benchmarks.publish` makes it, or reused."""
    texts = publish.corpus_texts(corpus_path, rows + PUBLISH_QUERIES)[PUBLISH_QUERIES:]
    return publish.make_tables(os.path.join(workdir, "tables"), texts, rows, module)["full"]


def measure(table: str, repeats: int, page: str) -> dict[str, Any]:
    """Times `write_report(table, output=page)` in this process: the first call, then `repeats` more; peak RSS around the first."""
    # Imported here: the report's modules (Beam, Plotly) are what the measured process loads.
    from pipelines.publish.source import open_table
    from pipelines.report.build import write_report
    from pipelines.report.options import ReportOptions

    rows = open_table(table).rows
    inside_repo = os.path.abspath(page).startswith(harness.REPO_ROOT + os.sep)
    rss_before = harness.process_peak_rss_mb()
    seconds = []
    for _ in range(1 + repeats):
        start = time.perf_counter()
        write_report(table, ReportOptions(), output=page)
        seconds.append(time.perf_counter() - start)
        if len(seconds) == 1:
            rss_after = harness.process_peak_rss_mb()
    return {
        "rows": rows,
        "first_s": seconds[0],
        "repeat_s": seconds[1:],
        "median_s": statistics.median(seconds[1:]) if repeats else None,
        "peak_rss_after_imports_mb": rss_before,
        "peak_rss_mb": rss_after,
        "peak_rss_growth_mb": rss_after - rss_before,
        "page_bytes": os.path.getsize(page),
        "page": os.path.relpath(page, harness.REPO_ROOT) if inside_repo else page,
    }


def run_measure_process(table: str, repeats: int, workdir: str) -> dict[str, Any]:
    """`measure` in a fresh process (`--measure`), so its peak RSS is the report's alone; the page goes to `workdir`."""
    result_path, page = os.path.join(workdir, harness.RESULT_FILE), os.path.join(workdir, "report.html")
    cmd = [sys.executable, "-m", "benchmarks.report", "--measure", table, "--repeats", str(repeats)]
    cmd += ["--page", page, "--json", result_path]
    threads = os.cpu_count() or 1
    result = harness.run_contender_process(cmd, workdir, harness.contender_env(threads, threads), TIMEOUT_S)
    if "error" in result:
        raise harness.CommandError(result["error"])
    return result


def metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The report's figures: rows, seconds (first call, median of the repeats), peak RSS and its growth, page size."""
    return {
        "rows": result["rows"],
        "first_call_s": round(result["first_s"], 3),
        "median_s": None if result["median_s"] is None else round(result["median_s"], 3),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "peak_rss_growth_mb": round(result["peak_rss_growth_mb"], 1),
        "page_mb": round(result["page_bytes"] / 1e6, 2),
    }


def markdown(report: dict[str, Any]) -> str:
    """The result as a Markdown table (docs/benchmarks.md's report section)."""
    m = report["metrics"]
    rows = [
        ["rows of the table", f"{m['rows']:,}"],
        ["first call (s)", fmt(m["first_call_s"], 2)],
        [f"median of {report['repeats']} more calls (s)", fmt(m["median_s"], 2)],
        ["peak RSS of the process (MiB)", fmt(m["peak_rss_mb"], 0)],
        ["peak RSS the report added (MiB)", fmt(m["peak_rss_growth_mb"], 0)],
        ["page size (MB)", fmt(m["page_mb"], 2)],
    ]
    return markdown_table(["`write_report(table, ReportOptions())`", "value"], rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows of the table (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="calls after the first (default: 3)")
    parser.add_argument("--corpus", default=corpus.DEFAULT_OUTPUT)
    parser.add_argument("--module", default=publish.DEFAULT_MODULE)
    parser.add_argument(
        "--workdir", default=publish.DEFAULT_WORKDIR, help="tables are kept here (default: %(default)s)"
    )
    parser.add_argument("--table", help="a committed table to report on instead (--rows, --corpus, --module unused)")
    parser.add_argument("--measure", metavar="TABLE", help=argparse.SUPPRESS)  # the measured process
    parser.add_argument("--page", help=argparse.SUPPRESS)  # where the measured process writes the page
    parser.add_argument(
        "--json", default=harness.result_path(BENCHMARK), help="write the report here (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeats < 1:
        parser.error(f"--rows and --repeats must be at least 1, not {args.rows} and {args.repeats}")
    if args.measure:
        with open(args.json, "w") as f:
            json.dump(measure(args.measure, args.repeats, args.page), f)
        return 0
    meta = {**harness.machine(), "command": harness.command_line("benchmarks.report", argv)}
    if args.table:
        table = os.path.abspath(args.table)
    else:
        meta["module"] = args.module
        table = publish_full_table(args.corpus, args.rows, args.module, os.path.abspath(args.workdir))
    result = run_measure_process(table, args.repeats, os.path.join(os.path.abspath(args.workdir), "report"))
    harness.finish(meta)
    meta["versions"] = {**meta["versions"], **harness.package_versions(("plotly",))}
    report = {"metrics": metrics(result), "repeats": args.repeats, "run": result, "meta": meta}
    print(json.dumps(report["metrics"], indent=2))
    harness.write_result(BENCHMARK, report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
