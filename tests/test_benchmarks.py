"""The benchmark harness: corpus, report arithmetic, and a smoke run of the cheap contenders."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import corpus, run

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO_ROOT, "benchmarks", "data", "docstrings.jsonl")
ISSUE_KEYS = (
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
)


def test_committed_corpus_is_mixed_english_prose():
    with open(CORPUS, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    texts = [r["text"] for r in records]
    assert 5000 <= len(records) and os.path.getsize(CORPUS) < 4 * 2**20
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


def test_summarize_computes_the_issue_ratios():
    results = {
        "raw": {"rows_per_s": 500.0},
        "pipeline": {"rows": 100, "seconds": 0.25, "job_seconds": 0.25, "rows_per_s": 400.0, "load_s": 3.0, "peak_rss_mb": 1000.0},
        "pipeline_mp": {"rows": 100, "rows_per_s": 380.0, "job_seconds": 0.3125},
        "sentence_transformers": {"rows_per_s": 200.0},
        "beam_mltransform": {"error": "boom"},
        "pipeline_10n": {"rows": 1000, "seconds": 2.05, "peak_rss_mb": 1100.0},
    }
    metrics = run.summarize(results)
    assert metrics["pipeline_vs_raw"] == pytest.approx(0.8)
    assert metrics["pipeline_vs_sentence_transformers"] == pytest.approx(2.0)
    assert metrics["pipeline_vs_beam_mltransform"] is None
    assert metrics["mp_vs_single"] == pytest.approx(0.95)
    assert metrics["mp_vs_single_with_worker_startup"] == pytest.approx(0.8)  # 320 vs 400 rows per job second
    assert metrics["overhead_us_per_row"] == pytest.approx(500.0)  # 1/400 - 1/500 s
    assert metrics["rss_10n_vs_n"] == pytest.approx(1.1)
    assert metrics["pipeline_marginal_rows_per_s"] == pytest.approx(500.0)  # 900 rows in 1.8 s more
    targets = run.check_targets(metrics)
    assert targets["pipeline_vs_raw"]["met"] is False and targets["rss_10n_vs_n"]["met"] is True
    assert targets["pipeline_vs_beam_mltransform"]["met"] is None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_harness_smoke_run_of_raw_and_pipelines(tiny, tmp_path):
    out = tmp_path / "report.json"
    cmd = [
        sys.executable, "-m", "benchmarks.run", "--corpus", CORPUS, "--rows", "24",
        "--only", "raw,pipeline,pipeline_mp", "--module", tiny.text, "--json", str(out),
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(ISSUE_KEYS) <= set(report)
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
