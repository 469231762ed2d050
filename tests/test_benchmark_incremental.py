"""The incremental benchmark: its scenario of planted changes, its checks and metrics, and a smoke run."""

from __future__ import annotations

import difflib
import json
import os
import time

import numpy as np
import pytest

from benchmarks import harness, incremental, incremental_checks, incremental_scenario, text_report
from benchmarks import text as text_benchmark

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO_ROOT, "benchmarks", "data", "docstrings.jsonl")
# The keys the incremental run adds to the text benchmark's report.
INCREMENTAL_REPORT_KEYS = ("incremental_vs_full_wall", "incremental_vs_full_work", "incremental_us_per_unchanged_row")


def _words_changed(a: str, b: str) -> int:
    """How many words differ between two texts (replaced, inserted or deleted)."""
    opcodes = difflib.SequenceMatcher(a=a.split(" "), b=b.split(" "), autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal")


@pytest.fixture(scope="module")
def paragraphs():
    return incremental_scenario.read_paragraphs(CORPUS)


def test_incremental_scenario_is_deterministic_with_the_planted_changes(paragraphs):
    sc = incremental_scenario.build_scenario(paragraphs, 2000)
    assert sc == incremental_scenario.build_scenario(paragraphs, 2000)
    old, new = dict(sc.run1), dict(sc.run2)
    assert len(old) == len(sc.run1) == 2000 and len(new) == len(sc.run2)  # ids unique
    assert len(set(old.values())) == 2000  # run 1's texts are distinct
    assert [t for _, t in sc.run1] == paragraphs[:2000]  # N <= corpus: the paragraphs themselves
    assert (len(sc.removed), len(sc.changed), len(sc.added), len(sc.duplicates)) == (20, 20, 20, 40)
    assert not sc.removed & set(new) and sc.added == set(new) - set(old) and len(new) == 2000
    for row in sc.changed:
        assert new[row] != old[row] and new[row] not in old.values()
        assert 0 < _words_changed(old[row], new[row]) <= 7  # one small edit
    assert all(new[target] == new[source] for target, source in sc.duplicates.items())
    assert not set(sc.duplicates.values()) & set(sc.duplicates)  # a source is no duplicate
    of_unchanged = {t for t, s in sc.duplicates.items() if s not in sc.changed | sc.added}
    assert of_unchanged == sc.duplicates_of_unchanged and len(of_unchanged) == 20
    untouched = set(new) - sc.changed - sc.added - set(sc.duplicates)
    assert all(new[row] == old[row] for row in untouched) and len(untouched) == sc.unchanged == 1920
    assert sc.expected_run2() == {
        "rows_in": 2000,
        "rows_written": 2000,
        "rows_embedded": 60,
        "rows_reused": 1940,
        "rows_deduplicated": 40,
        "contents_embedded": 40,
        "rows_failed": 0,
    }
    assert len(sc.fresh_texts()) == 40
    # Ids and texts are stable across N: a smaller scenario's run 1 is a prefix of a larger one's.
    assert incremental_scenario.build_scenario(paragraphs, 500).run1 == sc.run1[:500]


def test_incremental_sequence_repeats_the_corpus_with_one_small_edit_per_copy(paragraphs):
    base = paragraphs[:50]
    texts = incremental_scenario.sequence_texts(base, 160)
    assert texts[:50] == base and len(set(texts)) == 160 and not set(texts[50:]) & set(base)
    for i, text in enumerate(texts[50:], 50):
        assert 0 < _words_changed(base[i % 50], text) <= 7  # one typo, word or short sentence
    assert (
        incremental_scenario.sequence_texts(base, 160) == texts
        and incremental_scenario.sequence_texts(base, 70) == texts[:70]
    )


def test_incremental_verify_catches_a_changed_bit():
    rows = [("a", "one"), ("b", "two"), ("c", "one")]
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2) + 1
    hashes = [incremental_checks.text_sha256(t) for _, t in rows]
    reference = incremental_checks.TableView(["a", "b"], hashes[:2], vectors[:2].copy(), {})
    good = incremental_checks.TableView(["a", "b", "c"], hashes, np.stack([vectors[0], vectors[1], vectors[0]]), {})
    check = incremental_checks.verify(rows, good, reference, rows[:2], None, [])
    assert check["reused_rows_bit_identical"] == check["reused_rows_checked"] == 3
    assert check["duplicate_groups_bit_identical"] == check["duplicate_groups"] == 1
    assert incremental_checks._verdict(check, 0)
    flipped = good.vectors.copy()
    flipped.view(np.uint32)[2, 1] ^= 1  # one ulp off in one row
    bad = incremental_checks.TableView(good.ids, hashes, flipped, {})
    check = incremental_checks.verify(rows, bad, reference, rows[:2], None, [])
    assert check["reused_rows_bit_identical"] == 2 and check["duplicate_groups_bit_identical"] == 0
    assert not incremental_checks._verdict(check, 0)
    wrong_hash = incremental_checks.TableView(good.ids, hashes[:2] + ["0" * 64], good.vectors, {})
    assert incremental_checks.verify(rows, wrong_hash, reference, rows[:2], None, [])["content_hash_mismatches"] == 1


def test_incremental_metrics_subtract_the_fixed_cost():
    result = {
        "rows": 50_000,
        "small_rows": 10_000,
        "counts_ok": True,
        "bit_identical": True,
        "scenario": {"unchanged": 48_000, "changed": 500, "added": 500},
        "fixed_s": {"full": [11.0, 10.0], "reuse": [10.5, 11.0], "reuse_hit": [3.0, 2.5]},
        "commands": {
            name: {"wall_s": s}
            for name, s in (("run1", 210.0), ("run2", 20.0), ("all-reused", 5.0), ("small-all-reused", 3.3))
        },
    }
    m = incremental.metrics(result)
    assert m["incremental_fixed_full_s"] == 10.0 and m["incremental_fixed_reuse_s"] == 10.5
    assert m["incremental_fixed_reuse_hit_s"] == 2.5
    assert m["incremental_vs_full_wall"] == pytest.approx(10.5)
    assert m["incremental_vs_full_work"] == pytest.approx(200.0 / 9.5)
    assert m["incremental_us_per_unchanged_row"] == pytest.approx(2.5 / 50_000 * 1e6)
    assert m["incremental_us_per_unchanged_row_small"] == pytest.approx(0.8 / 10_000 * 1e6)
    assert m["incremental_us_per_unchanged_row_marginal"] == pytest.approx(1.7 / 40_000 * 1e6)
    assert m["incremental_us_per_unchanged_row_run2"] == pytest.approx((9.5 - 1000 * 200.0 / 50_000) / 48_000 * 1e6)
    targets = text_report.check_targets(m)
    assert targets["incremental_vs_full_wall"]["met"] and targets["incremental_vs_full_work"]["met"]
    assert targets["incremental_us_per_unchanged_row"]["met"]


def test_run_selects_incremental_alone_without_rows(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"")  # parse_args only checks that the module is there
    module = str(tmp_path)
    args = text_benchmark.parse_args(["--corpus", CORPUS, "--only", "incremental", "--module", module])
    assert args.only == ["incremental"] and args.rows is None
    assert (args.incremental_rows, args.incremental_small_rows) == (50_000, 10_000)
    assert (
        "incremental" in text_benchmark.parse_args(["--corpus", CORPUS, "--rows", "5", "--module", module]).only
    )  # default set
    with pytest.raises(SystemExit):
        text_benchmark.parse_args(["--corpus", CORPUS, "--only", "raw", "--module", module])  # contenders need --rows
    with pytest.raises(SystemExit):
        text_benchmark.parse_args(
            ["--corpus", CORPUS, "--only", "incremental", "--incremental-small-rows", "60000", "--module", module]
        )


def _in_process(cmd, log_path):
    """Runs a `python -m pipelines.embed ...` command in this process (the smoke test's speed; not a timing)."""
    from pipelines import embed

    start = time.monotonic()
    status = embed.main(cmd[cmd.index("pipelines.embed") + 1 :])
    if status != 0:
        raise harness.CommandError(f"exit status {status}")
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_incremental_smoke_run_has_the_scenario_counts_and_bit_identical_vectors(tiny, tmp_path, paragraphs):
    n = 200
    result = incremental.run_incremental(
        paragraphs,
        n,
        0,
        tiny.text,
        str(tmp_path),
        dict(os.environ),
        REPO_ROOT,
        fixed_repeats=1,
        launch=_in_process,
        log=lambda message: None,
    )
    scenario = incremental_scenario.build_scenario(paragraphs, n)
    counts = {name: c["counts"] for name, c in result["commands"].items()}
    assert (
        {k: counts["run2"][k] for k in scenario.expected_run2()}
        == scenario.expected_run2()
        == {
            "rows_in": 200,
            "rows_written": 200,
            "rows_embedded": 6,
            "rows_reused": 194,
            "rows_deduplicated": 4,
            "contents_embedded": 4,
            "rows_failed": 0,
        }
    )
    assert counts["run1"]["rows_embedded"] == 200 and counts["run1"]["rows_reused"] == 0
    assert counts["all-reused"]["rows_reused"] == 200 and counts["all-reused"]["contents_embedded"] == 0
    assert counts["fixed-reuse-start"]["rows_reused"] == 0 and counts["fixed-reuse-start"]["rows_embedded"] == 1
    assert counts["fixed-reuse-hit-start"]["rows_reused"] == 1
    assert all(c["balanced"] is True for c in counts.values())
    assert result["commands"]["run2"]["reuse"]["used"] is True
    assert result["counts_ok"] and result["bit_identical"], json.dumps(result["checks"])
    vectors = result["checks"]["run2_vectors"]
    assert vectors["reused_rows_checked"] == vectors["reused_rows_bit_identical"] == 194
    assert vectors["new_rows_checked"] == 6 and vectors["new_rows_min_cosine"] >= incremental_checks.MIN_FRESH_COSINE
    assert vectors["duplicate_groups"] == vectors["duplicate_groups_bit_identical"] == 4
    m = result["metrics"]
    assert m["incremental_vs_full_wall"] > 0 and m["incremental_us_per_unchanged_row"] is not None
    # The report carries the group's keys, targets and printed lines.
    meta = {
        "date": "now",
        "cpu": "cpu",
        "cpu_flags": [],
        "cores": 2,
        "load_average_at_start": 0.0,
        "rows": None,
        "corpus": CORPUS,
        "module": tiny.text,
    }
    report = text_report.build_report(meta, {}, result)
    assert set(INCREMENTAL_REPORT_KEYS) <= set(report) and report["errors"] == {}
    assert report["targets"]["incremental_vs_full_wall"]["value"] == m["incremental_vs_full_wall"]
    table = text_report.format_table(report)
    assert "incremental_vs_full_work" in table and "run2_vectors" in table and "contender" not in table
