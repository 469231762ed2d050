"""The report benchmark at a tiny size: a real table of 300 rows (tiny text module), its report timed in a process of its own."""

from __future__ import annotations

import json

import pytest

from benchmarks import render, report
from tests.fixtures.postgres import embed_table

ROWS = [(f"id-{i}", f"row {i} says {i % 7} things about {i % 11}", "en" if i % 2 else "de") for i in range(300)]


def test_the_benchmark_times_the_report_of_a_committed_table_and_writes_its_figures(tmp_path, tiny):
    table = embed_table(tmp_path / "table", tiny.text, ROWS)
    result_path = tmp_path / "results" / "report.json"
    workdir = tmp_path / "work"

    rc = report.main(["--table", table, "--repeats", "1", "--workdir", str(workdir), "--json", str(result_path)])

    assert rc == 0
    result = json.loads(result_path.read_text())
    assert result["benchmark"] == "report"
    m = result["metrics"]
    assert m["rows"] == 300
    assert m["first_call_s"] > 0 and m["median_s"] > 0
    assert m["peak_rss_mb"] >= m["peak_rss_growth_mb"] >= 0 and m["peak_rss_mb"] > 100  # Python with Beam loaded
    page = workdir / "report" / "report.html"
    assert page.stat().st_size == result["run"]["page_bytes"] and m["page_mb"] == round(page.stat().st_size / 1e6, 2)
    assert "<html" in page.read_text(errors="replace").lower()
    assert result["meta"]["command"].startswith("python -m benchmarks.report --table")
    assert result["meta"]["cpu_flags"] is not None and "load_average_at_end" in result["meta"]
    section = render.render_section("report", result)
    assert "| rows of the table | 300 |" in section and "make bench-report" in section


def test_bad_sizes_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exited:
        report.main(["--rows", "0"])
    assert exited.value.code == 2
    assert "--rows and --repeats must be at least 1, not 0 and 3" in capsys.readouterr().err
