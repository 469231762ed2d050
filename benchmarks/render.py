"""`python -m benchmarks.render [--check]`: docs/benchmarks.md's tables, rendered from benchmarks/results/*.json.

Each benchmark's section lies between `<!-- results:NAME -->` and
`<!-- /results:NAME -->`; `--check` changes nothing and exits 1, naming the
benchmarks whose section is out of date with their result file.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from benchmarks import cpu, harness, images, incremental, report, text_report
from benchmarks.probes import int8_tables, op_profile
from benchmarks.tables import fmt, markdown_table, verdict

PAGE = os.path.join(harness.REPO_ROOT, "docs", "benchmarks.md")
RENDER_COMMAND = "python -m benchmarks.render"
VERSION_NAMES = {"tensorflow": "TensorFlow", "apache-beam": "Apache Beam", "pyarrow": "PyArrow"}


@dataclasses.dataclass(frozen=True)
class Section:
    """A benchmark's section of the page.

    Attributes:
      tables: its report in Markdown (the benchmark's own `markdown`).
      command: the command that writes its result file.
    """

    tables: Callable[[dict[str, Any]], str]
    command: str


def figures_tables(report: dict[str, Any]) -> str:
    """The tables of a benchmark without tables of its own: its targets, then its other `metrics`."""
    targets = report.get("targets") or {}
    rows = [
        [f"`{key}`", fmt(check["value"], 3), check["target"], verdict(check["met"])] for key, check in targets.items()
    ]
    rows += [
        [f"`{key}`", fmt(value, 3), "", ""]
        for key, value in (report.get("metrics") or {}).items()
        if key not in targets and not isinstance(value, dict | list)
    ]
    return markdown_table(["metric", "value", "target", ""], rows)


SECTIONS = {
    "text": Section(text_report.markdown, "make bench"),
    "images": Section(images.markdown, "make bench-images"),
    "incremental": Section(incremental.markdown, "make bench-incremental"),
    "op_profile": Section(op_profile.markdown, "make bench-op-profile"),
    "int8_probe": Section(int8_tables.markdown, "make bench-int8"),
    "publish": Section(figures_tables, "python -m benchmarks.publish"),
    "report": Section(report.markdown, "make bench-report"),
}


class PageError(ValueError):
    """The page or a result file cannot be rendered (a marker or a result file is unknown or missing)."""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name} -->", f"<!-- /results:{name} -->"


def _relative(path: str) -> str:
    """A path under the repository relative to it, others as they are."""
    absolute = os.path.abspath(path)
    inside = absolute.startswith(harness.REPO_ROOT + os.sep)
    return os.path.relpath(absolute, harness.REPO_ROOT) if inside else path


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def machine_lines(meta: dict[str, Any], command: str) -> list[str]:
    """Where and how a result was measured (the command, the CPU and its flags, the load, the versions), one paragraph each."""
    present = set(meta.get("cpu_flags") or [])
    absent = [flag for flag in cpu.LISTED_FLAGS if flag not in present]
    flags = f"flags {', '.join(meta.get('cpu_flags') or []) or 'none listed'}" + (
        f" (not {', '.join(absent)})" if absent else ""
    )
    load = f"load average {meta['load_average_at_start']:.2f} at the start"
    if meta.get("load_average_at_end") is not None:
        load += f", {meta['load_average_at_end']:.2f} at the end"
    if meta.get("duration_s") is not None:
        load += f"; the run took {_duration(meta['duration_s'])}"
    versions = [f"Python {meta['python']}"] + [
        f"{label} {meta['versions'][package]}"
        for package, label in VERSION_NAMES.items()
        if (meta.get("versions") or {}).get(package)
    ]
    if meta.get("pillow"):
        versions.append(meta["pillow"])
    lines = [
        f"Measured by `{meta['command']}` on {meta['cpu']}, {meta['cores']} cores; {flags}; {load}; "
        f"{', '.join(versions)}.",
    ]
    if harness.busy_at_start(meta):
        lines.append(
            f"**Noisy:** the machine was busy when this run started (load average {meta['load_average_at_start']:.2f} on "
            f"{meta['cores']} cores): other work shared it, so its timings are noisy."
        )
    lines.append(f"To measure again: `{command}`, then `{RENDER_COMMAND}`.")
    return lines


def render_section(name: str, report: dict[str, Any] | None) -> str:
    """A benchmark's section: what ran where, then its tables; a line saying how to fill it without a result."""
    section = SECTIONS[name]
    if report is None:
        return (
            f"Not measured yet: `{section.command}` writes `benchmarks/results/{name}.json`, "
            f"then `{RENDER_COMMAND}` fills this section."
        )
    meta = dict(report["meta"])
    if meta.get("module"):
        meta["module"] = _relative(meta["module"])
    return "\n\n".join([*machine_lines(meta, section.command), section.tables({**report, "meta": meta})])


def read_results(results_dir: str) -> dict[str, dict[str, Any]]:
    """Every result file of `results_dir`, by benchmark name.

    Raises:
      PageError: a file names no benchmark of `SECTIONS`.
    """
    reports = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name not in SECTIONS:
            raise PageError(f"{path}: no benchmark named {name!r} (known: {', '.join(SECTIONS)})")
        with open(path) as f:
            reports[name] = json.load(f)
    return reports


def render_page(page: str, reports: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """The page with every section rendered, and the names of the sections that changed.

    Raises:
      PageError: the page lacks a section's pair of markers.
    """
    stale = []
    for name in SECTIONS:
        start, end = _markers(name)
        pattern = re.compile(re.escape(start) + r"\n(.*?)\n?" + re.escape(end), re.DOTALL)
        match = pattern.search(page)
        if match is None:
            raise PageError(f"the page has no `{start}` ... `{end}` section for the {name} benchmark")
        rendered = render_section(name, reports.get(name))
        if match.group(1).strip() != rendered.strip():
            stale.append(name)
        page = page[: match.start()] + f"{start}\n{rendered}\n{end}" + page[match.end() :]
    return page, stale


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: writes the page, or (`--check`) exits 1 when a section is out of date."""
    parser = argparse.ArgumentParser(prog=RENDER_COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the page is out of date")
    parser.add_argument("--page", default=PAGE, help="the page (default: %(default)s)")
    parser.add_argument("--results", default=harness.RESULTS_DIR, help="result files (default: %(default)s)")
    args = parser.parse_args(argv)
    with open(args.page, encoding="utf-8") as f:
        page = f.read()
    try:
        rendered, stale = render_page(page, read_results(args.results))
    except PageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if stale:
            print(
                f"{_relative(args.page)} is out of date with the result files of: {', '.join(stale)} "
                f"(run `{RENDER_COMMAND}`)",
                file=sys.stderr,
            )
            return 1
        return 0
    if rendered != page:
        with open(args.page, "w", encoding="utf-8") as f:
            f.write(rendered)
    print(f"{_relative(args.page)}: {', '.join(stale) or 'nothing'} rendered anew", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
