"""The text benchmark: corpus, report arithmetic, and smoke runs of the cheap contenders (incremental: its own file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import corpus, cpu, harness, text_report
from benchmarks import text as text_benchmark

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO_ROOT, "benchmarks", "data", "docstrings.jsonl")
REPORT_KEYS = (
    "raw_rows_per_s",
    "pipeline_rows_per_s",
    "pipeline_mp_rows_per_s",
    "sentence_transformers_rows_per_s",
    "beam_mltransform_rows_per_s",
    "pipeline_vs_raw",
    "pipeline_vs_sentence_transformers",
    "pipeline_vs_beam_mltransform",
    "mp_vs_single",
    "overhead_us_per_row",
    "load_s",
    "peak_rss_mb_n",
    "peak_rss_mb_10n",
    "incremental_vs_full_wall",
    "incremental_vs_full_work",
    "incremental_us_per_unchanged_row",
)
# The precision keys: bfloat16, ONNX and int8 contenders, and the like-for-like ratios.
PRECISION_KEYS = (
    "raw_bf16_rows_per_s",
    "pipeline_bf16_rows_per_s",
    "pipeline_mp_bf16_rows_per_s",
    "st_bf16_rows_per_s",
    "st_onnx_rows_per_s",
    "st_onnx_int8_rows_per_s",
    "pipeline_bf16_vs_fp32",
    "pipeline_bf16_vs_sentence_transformers",
    "pipeline_best_vs_st_best_0999",
    "pipeline_best_vs_st_best_099",
    "pipeline_best_0999",
    "st_best_0999",
    "pipeline_best_099",
    "st_best_099",
)


def test_committed_corpus_is_mixed_english_prose():
    with open(CORPUS, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    texts = [r["text"] for r in records]
    assert len(records) >= 5000 and os.path.getsize(CORPUS) < 4 * 2**20
    assert len(set(texts)) == len(texts) and len({r["id"] for r in records}) == len(records)
    assert all(corpus.is_prose(t) for t in texts)
    lengths = sorted(len(t) for t in texts[:2000])
    assert lengths[200] < 60 and lengths[-200] > 200  # short and long texts in any 2000-row prefix


def test_paragraphs_keep_prose_and_drop_code_and_lists():
    docstring = (
        "Return the sum of two numbers.\n\nThe arguments may be integers or floats,\nand the result has their type.\n\n"
        ">>> add(1, 2)\n3\n\nArgs:\n    a: first.\n\n- item one\n- item two\n\nx"
    )
    assert list(corpus.paragraphs(docstring)) == [
        "Return the sum of two numbers.",
        "The arguments may be integers or floats, and the result has their type.",
    ]


def test_read_texts_reads_jsonl_and_plain_text_and_repeats(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    plain = tmp_path / "c.txt"
    plain.write_text("alpha\nbeta\n\ngamma\n")
    assert corpus.read_texts(str(jsonl), 5) == ["one", "two", "one", "two", "one"]
    assert corpus.read_texts(str(plain), 2) == ["alpha", "beta"]
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="text"):
        corpus.read_texts(str(tmp_path / "bad.jsonl"), 1)


def test_summarize_computes_the_report_ratios():
    results = {
        "raw": {"rows_per_s": 500.0},
        "pipeline": {
            "rows": 100,
            "seconds": 0.25,
            "job_seconds": 0.25,
            "rows_per_s": 400.0,
            "load_s": 3.0,
            "peak_rss_mb": 1000.0,
        },
        "pipeline_mp": {"rows": 100, "rows_per_s": 380.0, "job_seconds": 0.3125},
        "sentence_transformers": {"rows_per_s": 200.0},
        "beam_mltransform": {"error": "boom"},
        "pipeline_10n": {"rows": 1000, "seconds": 2.05, "peak_rss_mb": 1100.0},
    }
    metrics = text_report.summarize(results)
    assert metrics["pipeline_vs_raw"] == pytest.approx(0.8)
    assert metrics["pipeline_vs_sentence_transformers"] == pytest.approx(2.0)
    assert metrics["pipeline_vs_beam_mltransform"] is None
    assert metrics["mp_vs_single"] == pytest.approx(0.95)
    assert metrics["mp_vs_single_with_worker_startup"] == pytest.approx(0.8)  # 320 vs 400 rows per job second
    assert metrics["overhead_us_per_row"] == pytest.approx(500.0)  # 1/400 - 1/500 s
    assert metrics["rss_10n_vs_n"] == pytest.approx(1.1)
    assert metrics["pipeline_marginal_rows_per_s"] == pytest.approx(500.0)  # 900 rows in 1.8 s more
    targets = text_report.check_targets(metrics)
    assert targets["pipeline_vs_raw"]["met"] is False and targets["rss_10n_vs_n"]["met"] is True
    assert targets["pipeline_vs_beam_mltransform"]["met"] is None


def _speed(rows_per_s, min_cosine=None):
    """A synthetic contender result: its speed and, when compared with `raw`, its min cosine."""
    result = {"rows": 100, "seconds": 100 / rows_per_s, "rows_per_s": rows_per_s}
    if min_cosine is not None:
        result["min_cosine_vs_raw"] = min_cosine
    return result


def test_summarize_picks_the_fastest_contender_on_each_side_within_each_cosine_bound():
    results = {
        "raw": _speed(300.0, 1.0),
        "pipeline": _speed(280.0, 1.0),
        "pipeline_mp": _speed(290.0, 1.0),
        "pipeline_bf16": _speed(560.0, 0.9995),  # within 0.999: beats the float32 pipelines
        "pipeline_mp_bf16": _speed(600.0, 0.995),  # fastest, but only within 0.99
        "sentence_transformers": _speed(200.0, 1.0),
        "st_bf16": _speed(250.0, 0.9990),  # exactly on the bound: counts
        "st_onnx": _speed(240.0, 0.99999),
        "st_onnx_int8": _speed(400.0, 0.985),  # fastest, within neither bound
    }
    m = text_report.summarize(results)
    assert (m["pipeline_best_0999"], m["st_best_0999"]) == ("pipeline_bf16", "st_bf16")
    assert m["pipeline_best_vs_st_best_0999"] == pytest.approx(560 / 250)
    assert (m["pipeline_best_099"], m["st_best_099"]) == ("pipeline_mp_bf16", "st_bf16")
    assert m["pipeline_best_vs_st_best_099"] == pytest.approx(600 / 250)
    assert m["pipeline_bf16_vs_fp32"] == pytest.approx(2.0)
    assert m["pipeline_bf16_vs_sentence_transformers"] == pytest.approx(2.8)
    assert m["st_onnx_int8_rows_per_s"] == 400.0 and m["raw_bf16_rows_per_s"] is None
    targets = text_report.check_targets(m)
    assert targets["pipeline_bf16_vs_fp32"]["met"] is True and targets["pipeline_bf16_vs_fp32"]["target"] == ">= 1.8"
    assert targets["pipeline_best_vs_st_best_0999"]["met"] is True
    # int8 within 0.99 now: the fastest sentence-transformers contender at that bound.
    results["st_onnx_int8"]["min_cosine_vs_raw"] = 0.992
    m = text_report.summarize(results)
    assert m["st_best_099"] == "st_onnx_int8" and m["pipeline_best_vs_st_best_099"] == pytest.approx(1.5)
    assert text_report.check_targets(m)["pipeline_best_vs_st_best_099"]["met"] is True


def test_best_at_parity_leaves_out_failed_unmeasured_and_uncompared_contenders():
    results = {
        "pipeline": _speed(280.0, 0.9999),
        "pipeline_bf16": {"error": "no bfloat16 module at x"},
        "pipeline_mp": _speed(900.0),  # no cosine (not compared with raw): not at parity
        "sentence_transformers": _speed(200.0, 0.9995),
        "st_onnx": {"error": "exit status 1"},
    }
    m = text_report.summarize(results)
    assert m["pipeline_best_0999"] == "pipeline" and m["st_best_0999"] == "sentence_transformers"
    assert m["pipeline_best_vs_st_best_0999"] == pytest.approx(1.4)
    assert m["pipeline_bf16_vs_fp32"] is None and m["pipeline_bf16_vs_sentence_transformers"] is None
    # No sentence-transformers contender within the bound: no ratio, no winner, target not measured.
    results["sentence_transformers"]["min_cosine_vs_raw"] = 0.98
    m = text_report.summarize(results)
    assert (
        m["st_best_099"] is None and m["pipeline_best_vs_st_best_099"] is None and m["pipeline_best_099"] == "pipeline"
    )
    assert text_report.check_targets(m)["pipeline_best_vs_st_best_099"]["met"] is None
    m = text_report.summarize({})
    assert all(m[key] is None for key in PRECISION_KEYS)


def test_add_parity_measures_min_and_mean_cosine_against_the_float32_raw_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 8)).astype(np.float32)
    other = reference.copy()
    other[1] = -other[1]  # one row opposite: cosine -1, the others 1
    paths = {}
    for name, matrix in (("raw", reference), ("raw_bf16", other), ("st_bf16", reference * 3)):
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], matrix)
    results = {name: {"rows": 4, "embeddings": path} for name, path in paths.items()}
    results["pipeline_10n"] = {"rows": 40, "embeddings": paths["raw"]}  # other rows: not compared
    text_report.add_parity(results)
    assert results["raw_bf16"]["min_cosine_vs_raw"] == pytest.approx(-1.0)
    assert results["raw_bf16"]["mean_cosine_vs_raw"] == pytest.approx(0.5)
    assert results["st_bf16"]["min_cosine_vs_raw"] == pytest.approx(1.0)  # scale does not matter
    assert results["st_bf16"]["mean_cosine_vs_raw"] == pytest.approx(1.0)
    assert "min_cosine_vs_raw" not in results["pipeline_10n"]


SAMPLE_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""


def test_cpuinfo_gives_the_model_name_and_which_bf16_and_int8_flags_are_present(tmp_path):
    model, flags = cpu.parse_cpuinfo(SAMPLE_CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.features(flags) == {
        "avx512f": True,
        "avx512_vnni": True,
        "avx512_bf16": True,
        "amx_int8": False,
        "amx_bf16": True,
    }
    assert cpu.listed_flags(flags) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert cpu.quantization_preset(flags, "x86_64") == "avx512_vnni"
    assert cpu.quantization_preset({"avx2", "avx512f"}, "x86_64") == "avx512"
    assert cpu.quantization_preset({"avx2"}, "x86_64") == "avx2"
    assert cpu.quantization_preset(set(), "aarch64") == "arm64"
    assert cpu.parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd bf16\n") == (None, {"fp", "asimd", "bf16"})
    path = tmp_path / "cpuinfo"
    path.write_text(SAMPLE_CPUINFO)
    assert cpu.read_cpuinfo(str(path))[0] == model
    assert cpu.read_cpuinfo(str(tmp_path / "missing"))[1] == set()
    meta = {"cpu": model, "cores": 2, "cpu_features": cpu.features(flags)}
    assert harness.cpu_line(meta) == (
        "CPU: Intel(R) Xeon(R) Platinum 8480+, 2 cores; avx512f yes, avx512_vnni yes, avx512_bf16 yes, "
        "amx_int8 no, amx_bf16 yes"
    )


def test_a_missing_bf16_module_or_onnx_interpreter_fails_only_its_own_contenders(tmp_path, monkeypatch):
    (tmp_path / "fp32").mkdir()
    (tmp_path / "fp32" / "saved_model.pb").write_bytes(b"")  # parse_args only checks that the module is there
    missing = str(tmp_path / "no-bf16")
    args = text_benchmark.parse_args(
        [
            "--corpus",
            CORPUS,
            "--rows",
            "3",
            "--module",
            str(tmp_path / "fp32"),
            "--module-bf16",
            missing,
            "--only",
            "raw_bf16,pipeline_bf16,pipeline_mp_bf16,st_onnx,st_onnx_int8",
        ]
    )
    launched = []
    monkeypatch.setattr(text_benchmark, "run_task", lambda name, *rest: launched.append(name) or {"error": "ran"})
    monkeypatch.setattr(text_benchmark, "default_bench_onnx_python", lambda: None)
    workdir = tmp_path / "work"
    workdir.mkdir()
    results = text_benchmark.run_all(args, str(workdir))
    assert launched == []
    for name in ("raw_bf16", "pipeline_bf16", "pipeline_mp_bf16"):
        assert results[name]["error"].startswith(f"no bfloat16 module at {missing}")
        assert "--precision bfloat16" in results[name]["error"]
    for name in ("st_onnx", "st_onnx_int8"):
        assert (
            "ONNX backend is not installed" in results[name]["error"] and ".venv-bench-onnx" in results[name]["error"]
        )
    report = text_report.build_report(text_benchmark.machine_meta(args), results)
    assert set(report["errors"]) == set(results) and report["pipeline_bf16_vs_fp32"] is None
    assert report["pipeline_best_vs_st_best_0999"] is None
    assert "failed: no bfloat16 module" in text_report.format_table(report)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_harness_smoke_run_of_raw_and_pipelines(tiny, tmp_path):
    out = tmp_path / "report.json"
    # The bf16 tasks get a copy of the tiny module at another path: the report shows which module each used.
    bf16 = shutil.copytree(tiny.text, tmp_path / "bf16-stand-in")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.text",
        "--corpus",
        CORPUS,
        "--rows",
        "24",
        "--only",
        "raw,pipeline,pipeline_mp,raw_bf16,pipeline_bf16",
        "--module",
        tiny.text,
        "--module-bf16",
        str(bf16),
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(REPORT_KEYS) <= set(report) and set(PRECISION_KEYS) <= set(report)
    assert report["errors"] == {}
    assert report["raw_rows_per_s"] > 0 and report["pipeline_rows_per_s"] > 0
    assert report["pipeline_vs_raw"] == pytest.approx(report["pipeline_rows_per_s"] / report["raw_rows_per_s"])
    assert report["overhead_us_per_row"] == pytest.approx(
        1e6 / report["pipeline_rows_per_s"] - 1e6 / report["raw_rows_per_s"]
    )
    for skipped in ("sentence_transformers_rows_per_s", "beam_mltransform_rows_per_s", "peak_rss_mb_10n"):
        assert report[skipped] is None
    assert report["load_s"] > 0 and 100 < report["peak_rss_mb_n"] < 32_000
    pipeline, mp = report["contenders"]["pipeline"], report["contenders"]["pipeline_mp"]
    assert pipeline["counts"]["rows_embedded"] == 24 and pipeline["min_cosine_vs_raw"] > 0.999
    assert mp["counts"]["rows_embedded"] == 24 and mp["min_cosine_vs_raw"] > 0.999
    # The pipeline's peak is taken at its commit, before the harness reads the table back.
    assert pipeline["peak_rss_mb"] <= pipeline["process_peak_rss_mb"]
    # Worker start-up is measured in worker processes only, and excluded like the model load.
    assert pipeline["worker_startup_s"] == 0 and pipeline["seconds"] == pipeline["job_seconds"]
    assert 0 < mp["worker_startup_s"] < 60
    assert mp["seconds"] == pytest.approx(mp["job_seconds"] - mp["worker_startup_s"])
    assert report["mp_vs_single"] == pytest.approx(report["pipeline_mp_rows_per_s"] / report["pipeline_rows_per_s"])
    assert "pipeline, DirectRunner" in done.stdout and "pipeline_vs_raw" in done.stdout
    # The bf16 tasks: the same contenders, run with --module-bf16, compared with the float32 raw (min and mean).
    contenders = report["contenders"]
    assert contenders["raw"]["module"] == contenders["pipeline"]["module"] == os.path.abspath(tiny.text)
    assert contenders["raw_bf16"]["module"] == contenders["pipeline_bf16"]["module"] == str(bf16)
    assert contenders["pipeline_bf16"]["counts"]["rows_embedded"] == 24
    for name in ("raw_bf16", "pipeline_bf16", "pipeline"):
        assert contenders[name]["min_cosine_vs_raw"] > 0.999
        assert contenders[name]["min_cosine_vs_raw"] <= contenders[name]["mean_cosine_vs_raw"] <= 1 + 1e-6
    assert report["pipeline_bf16_vs_fp32"] == pytest.approx(
        report["pipeline_bf16_rows_per_s"] / report["pipeline_rows_per_s"]
    )
    assert report["pipeline_best_0999"] in ("pipeline", "pipeline_mp", "pipeline_bf16")
    assert report["st_best_0999"] is None and report["pipeline_best_vs_st_best_0999"] is None  # no ST contender ran
    assert report["meta"]["module_bf16"] == str(bf16) and set(report["meta"]["cpu_features"]) == set(cpu.KEY_FLAGS)
    assert report["meta"]["load_average_at_end"] >= 0 and " at end" in done.stdout
    assert "CPU: " in done.stdout and "raw bf16 module" in done.stdout and "pipeline_bf16_vs_fp32" in done.stdout


def test_header_warns_of_other_work_from_the_load_at_start_or_beyond_the_contenders_own_at_the_end():
    meta = {
        "date": "now",
        "cpu": "cpu",
        "cpu_flags": [],
        "cores": 2,
        "load_average_at_start": 0.1,
        "load_average_at_end": 2.2,
        "tf_threads": {"intra_op": 2, "inter_op": 1},
        "rows": 5,
        "corpus": CORPUS,
        "module": "m",
    }
    table = text_report.format_table(text_report.build_report(meta, {}))
    assert "load average 0.10 at start, 2.20 at end" in table and "WARNING" not in table  # its own 2 threads
    table = text_report.format_table(text_report.build_report({**meta, "load_average_at_end": 3.5}, {}))
    assert "WARNING: other work ran on the machine during the benchmark" in table
    table = text_report.format_table(text_report.build_report({**meta, "load_average_at_start": 1.5}, {}))
    assert "WARNING: the machine was busy when the benchmark started" in table
