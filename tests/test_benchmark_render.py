"""`benchmarks.render`: docs/benchmarks.md's tables rendered from result files, and `--check`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import images, incremental, render, text_report
from benchmarks.probes import int8_tables, op_profile

META = {
    "date": "2026-01-01T00:00:00+00:00",
    "cpu": "AMD EPYC 9R14",
    "cpu_flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"],
    "cpu_features": {"avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "amx_int8": False, "amx_bf16": False},
    "cores": 2,
    "load_average_at_start": 0.12,
    "load_average_at_end": 2.05,
    "duration_s": 400,
    "python": "3.11.9",
    "versions": {"tensorflow": "2.21.0", "apache-beam": "2.70.0", "pyarrow": "22.0.0"},
    "pillow": "Pillow-SIMD 12.1.1.post0",
}


def _page() -> str:
    """A page with every benchmark's markers, text around them, and stale text inside one."""
    sections = "\n\n".join(
        f"## {name}\n\n{'old table' if name == 'images' else ''}\n<!-- results:{name} -->\n"
        f"{'| stale |' if name == 'images' else ''}\n<!-- /results:{name} -->"
        for name in render.SECTIONS
    )
    return f"# Benchmarks\n\nIntroduction.\n\n{sections}\n\nThe end.\n"


def _images_report(tmp_path) -> dict:
    """An image benchmark's report from two rounds of raw and the pipeline (the same embeddings)."""
    runs = {
        "raw": [{"images_per_s": 100.0, "rows": 10, "decode_s": 0.05, "steal_s": 0.0}] * 2,
        "pipeline": [
            {"images_per_s": r, "rows": 10, "outside_inference_s": 0.01, "steal_s": 0.1} for r in (88.0, 84.0)
        ],
    }
    workdirs = {name: str(tmp_path / name) for name in runs}
    for workdir in workdirs.values():
        (tmp_path / workdir).mkdir()
        np.save(f"{workdir}/embeddings.npy", np.eye(3, dtype=np.float32))
    report = images.summarize(runs, workdirs)
    report["meta"] = {
        **META,
        "images": 10,
        "repeats": 2,
        "module": "build/modules/efficientnet-lite0/1",
        "command": "python -m benchmarks.images --images 10 --repeats 2",
    }
    return {"benchmark": "images", **report}


def _write(results_dir, name: str, report: dict) -> None:
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(report))


def test_render_fills_each_section_between_its_markers_and_check_then_passes(tmp_path, capsys):
    page, results = tmp_path / "benchmarks.md", tmp_path / "results"
    page.write_text(_page())
    _write(results, "images", _images_report(tmp_path))
    assert render.main(["--page", str(page), "--results", str(results), "--check"]) == 1
    assert "out of date with the result files of: text, images, incremental, op_profile, int8_probe, publish" in (
        capsys.readouterr().err
    )
    assert render.main(["--page", str(page), "--results", str(results)]) == 0
    written = page.read_text()
    assert written.startswith("# Benchmarks\n\nIntroduction.\n") and written.endswith("\n\nThe end.\n")
    assert "| stale |" not in written and "old table" in written  # only the inside of the markers changes
    section = written.split("<!-- results:images -->\n")[1].split("\n<!-- /results:images -->")[0]
    assert section.startswith(
        "Measured by `python -m benchmarks.images --images 10 --repeats 2` on AMD EPYC 9R14, 2 cores; flags avx2, "
        "avx512f, avx512_vnni, avx512_bf16 (not avx_vnni, amx_tile, amx_bf16, amx_int8); load average 0.12 at the "
        "start, 2.05 at the end; the run took 7 min; Python 3.11.9, TensorFlow 2.21.0, Apache Beam 2.70.0, "
        "PyArrow 22.0.0, Pillow-SIMD 12.1.1.post0."
    )
    assert "To measure again: `make bench-images`, then `python -m benchmarks.render`." in section
    assert "busy" not in section and "2026" not in section  # no date on the page
    assert "| pipeline, DirectRunner | 86.0 | 0.860 | 1.00 | 88.0, 84.0 |" in section
    assert "- target vs raw >= 0.85: met by pipeline, DirectRunner; best 0.860 (pipeline, DirectRunner)" in section
    text = written.split("<!-- results:text -->\n")[1].split("\n<!-- /results:text -->")[0]
    assert text == (
        "Not measured yet: `make bench` writes `benchmarks/results/text.json`, "
        "then `python -m benchmarks.render` fills this section."
    )
    assert render.main(["--page", str(page), "--results", str(results), "--check"]) == 0
    assert render.main(["--page", str(page), "--results", str(results)]) == 0 and page.read_text() == written


def test_check_names_the_benchmark_whose_result_file_changed_and_changes_nothing(tmp_path, capsys):
    page, results = tmp_path / "benchmarks.md", tmp_path / "results"
    page.write_text(_page())
    report = _images_report(tmp_path)
    _write(results, "images", report)
    assert render.main(["--page", str(page), "--results", str(results)]) == 0
    rendered = page.read_text()
    report["meta"]["load_average_at_start"] = 1.5  # a new run on a busy machine
    _write(results, "images", report)
    capsys.readouterr()
    assert render.main(["--page", str(page), "--results", str(results), "--check"]) == 1
    assert capsys.readouterr().err == (
        f"{page} is out of date with the result files of: images (run `python -m benchmarks.render`)\n"
    )
    assert page.read_text() == rendered
    assert render.main(["--page", str(page), "--results", str(results)]) == 0
    assert "**Noisy:** the machine was busy when this run started (load average 1.50 on 2 cores)" in page.read_text()


def test_a_page_without_a_benchmarks_markers_or_an_unknown_result_file_is_an_error(tmp_path, capsys):
    page, results = tmp_path / "benchmarks.md", tmp_path / "results"
    page.write_text(_page().replace("<!-- /results:incremental -->", ""))
    results.mkdir()
    assert render.main(["--page", str(page), "--results", str(results), "--check"]) == 2
    assert "no `<!-- results:incremental -->` ... `<!-- /results:incremental -->` section" in capsys.readouterr().err
    page.write_text(_page())
    _write(results, "speed", _images_report(tmp_path))
    assert render.main(["--page", str(page), "--results", str(results)]) == 2
    assert "speed.json: no benchmark named 'speed'" in capsys.readouterr().err
    assert page.read_text() == _page()


def test_every_benchmarks_tables_render_from_its_report():
    text_results = {
        "raw": {"rows": 100, "seconds": 0.2, "rows_per_s": 500.0, "load_s": 1.0, "min_cosine_vs_raw": 1.0},
        "pipeline": {"rows": 100, "seconds": 0.25, "rows_per_s": 400.0, "peak_rss_mb": 1000.0},
        "st_onnx": {"error": "sentence-transformers' ONNX backend is not installed\nmore"},
    }
    text_meta = {**META, "rows": 100, "corpus": "c.jsonl", "module": "m", "tf_threads": {"intra_op": 2, "inter_op": 1}}
    table = text_report.markdown(text_report.build_report(text_meta, text_results))
    assert "| pipeline, DirectRunner | 100 | 400.0 | 0.25 | - | 1000 | - | - |" in table
    assert "| ST ONNX Runtime | failed: sentence-transformers' ONNX backend is not installed |" in table
    assert "| `pipeline_vs_raw` | 0.800 | >= 0.85 | NOT met |" in table
    assert "incremental" not in table  # its targets show only where the group ran
    inc = {
        "rows": 1000,
        "scenario": {"unchanged": 960, "changed": 10},
        "commands": {
            "run1": {"rows": 1000, "wall_s": 20.0, "counts": {"rows_embedded": 1000, "rows_reused": 0}},
        },
        "checks": {"run2_counts": {"wrong": {}}},
        "counts_ok": True,
        "metrics": dict.fromkeys(incremental.METRIC_KEYS) | {"incremental_vs_full_wall": 9.5},
    }
    table = incremental.markdown(inc)
    assert "Scenario at N = 1000: unchanged 960, changed 10." in table
    assert "| run1 | 1000 | 20.00 | 1000 | 0 | - | - |" in table
    assert "| `incremental_vs_full_wall` | 9.5 | >= 5.0 | met |" in table
    profile = {
        "module": "m",
        "precision": "float32",
        "rows": 10,
        "wall_s": 0.5,
        "rows_per_s": 20.0,
        "op_ms": {"MatMul": 300.0, "Cast": 100.0},
    }
    table = op_profile.markdown({"results": [profile], "meta": META})
    assert "| `MatMul` | 300 (75.0%) |" in table and "| wall, rows/s | 500 ms, 20.0 |" in table
    e2e = {"variant": "float32", "rows_per_s": 250.0, "rows_per_s_range": [240.0, 260.0], "min_cos": 1.0}
    table = int8_tables.markdown(
        {"e2e": [{**e2e, "mean_cos": 1.0}], "meta": {**META, "threads": 2, "onednn_opts": "default(on)", "rows": 10}}
    )
    assert "| float32 | 250.0 | 240.0–260.0 | 1.00000 | 1.00000 |" in table and "micro" not in table
    # A benchmark without tables of its own: its targets, then its other metrics.
    report = {"metrics": {"speedup": 4.25, "rows_per_s": 900.0, "counts": {"rows": 1}}}
    report["targets"] = {"speedup": {"value": 4.25, "target": ">= 3.0", "met": True}}
    table = render.figures_tables(report)
    assert table.splitlines()[2:] == ["| `speedup` | 4.250 | >= 3.0 | met |", "| `rows_per_s` | 900.000 |  |  |"]


@pytest.mark.parametrize("name", sorted(render.SECTIONS))
def test_the_committed_page_has_a_section_for_each_benchmark(name):
    with open(render.PAGE, encoding="utf-8") as f:
        page = f.read()
    assert f"<!-- results:{name} -->" in page and f"<!-- /results:{name} -->" in page


def test_the_committed_page_is_up_to_date_with_the_committed_result_files(capsys):
    assert render.main(["--check"]) == 0, capsys.readouterr().err
