"""Comparing two committed tables: neighbour overlap@k, both modules' lineage, and the report section in Chromium.

The tables are real `pipelines.embed` runs of one small text set with a released parent module, its fine-tuned
child (`pipelines.finetune`, as the release DAG makes it) and an unrelated module of another dimension.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import subprocess
import sys

import numpy as np
import plotly.offline
import pytest

from pipelines.embedding import sinks
from pipelines.report.compare import compare_tables
from pipelines.report.compare_section import comparison_html
from pipelines.report.errors import ReportError
from pipelines.report.neighbour_overlap import nearest_neighbours, neighbour_overlap
from tests.fixtures import release
from tests.fixtures import tiny_modules as tm

# The tests share a module fixture of real tables: under `--dist loadgroup` one worker builds it once.
pytestmark = pytest.mark.xdist_group("report_compare")

WORDS = ["apple", "pear", "banana", "juice", "car", "truck", "road", "engine", "tire", "bread", "tree", "oil"]
K = 10


def corpus(n: int = 150) -> list[dict[str, str]]:
    """`n` short texts over the fine-tuning data's words, each with an id; one has a tab and a newline in it."""
    rng = np.random.default_rng(7)
    rows = [{"id": f"doc-{i:03d}", "text": " ".join(rng.choice(WORDS, size=4))} for i in range(n)]
    rows[5]["text"] += "\tand a <b>tag</b>\nover two lines"
    return rows


@pytest.fixture(scope="module")
def tables(parent_root, tmp_path_factory):
    """Tables of one corpus embedded with `tiny` v1 (parent), v2 (fine-tuned from v1) and a 16-d unrelated module."""
    from pipelines import embed, finetune

    root = tmp_path_factory.mktemp("compare")
    modules = release.copy_root(parent_root, str(root / "modules"))
    parent = os.path.join(modules, "tiny", "1")
    data = release.write_labeled(str(root / "labeled.jsonl"))
    hparams = finetune.Hyperparameters(steps=20, learning_rate=0.05, seed=0)
    child = finetune.finetune(parent, data, modules, hparams=hparams).export.path
    wide = tm.build_text_module(str(root / "wide"), dim=16, seed=3)
    source = root / "corpus.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in corpus()))
    out = {"parent_module": parent}
    for name, module in (("parent", parent), ("child", child), ("wide", wide)):
        out[name] = str(root / "tables" / name)
        args = ["--input", str(source), "--id-field", "id", "--passthrough", "text", "--module", module]
        assert embed.main([*args, "--output", out[name], "--no-report"]) == 0
    return out


def cosine_neighbours(table: str, ids: list[str], k: int) -> dict[str, set[str]]:
    """Each id's `k` nearest other ids among `ids` by cosine, ties by id: computed here from the table's rows."""
    read = sinks.read_table(table)
    vectors = dict(zip(read.column("id").to_pylist(), read.column("embedding").to_pylist()))
    unit = {i: np.asarray(vectors[i]) / np.linalg.norm(vectors[i]) for i in ids}
    return {i: set(sorted((j for j in ids if j != i), key=lambda j: (-float(unit[i] @ unit[j]), j))[:k]) for i in ids}


# --------------------------------------------------------------------------- overlap on arrays


def test_overlap_is_one_for_the_same_space_and_for_an_isometry_into_more_dimensions():
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(40)]
    vectors = rng.normal(size=(40, 8))
    assert np.array_equal(neighbour_overlap(ids, vectors, vectors, 5), np.ones(40))
    rotation, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    wider = vectors @ rotation[:8]  # 8 -> 24 dimensions, cosines kept
    assert np.array_equal(neighbour_overlap(ids, vectors, wider * 3.0, 5), np.ones(40))
    unrelated = neighbour_overlap(ids, vectors, rng.normal(size=(40, 3)), 5)
    assert ((unrelated >= 0) & (unrelated <= 1)).all() and unrelated.mean() < 0.5
    assert set(np.unique(unrelated * 5)) <= set(range(6))


def test_neighbours_do_not_depend_on_row_order_and_ties_go_to_the_smaller_id():
    ids = ["d", "b", "a", "c"]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # a, b, d equal; c orthogonal
    near = nearest_neighbours(ids, vectors, 2)
    assert [[ids[j] for j in row] for row in near] == [["a", "b"], ["a", "d"], ["b", "d"], ["a", "b"]]
    order = [2, 0, 3, 1]
    shuffled = nearest_neighbours([ids[i] for i in order], vectors[order], 2)
    assert [[ids[order[j]] for j in row] for row in shuffled] == [[ids[j] for j in near[i]] for i in order]
    with pytest.raises(ValueError, match="at least 5 rows"):
        nearest_neighbours(ids, vectors, 4)


def test_neighbours_of_a_sample_larger_than_a_block_with_many_ties_match_a_plain_sort():
    rng = np.random.default_rng(3)
    ids = [f"r{i:04d}" for i in rng.permutation(1500)]  # more rows than one block
    vectors = rng.normal(size=(30, 4))[rng.integers(0, 30, size=1500)]  # 30 vectors, each repeated: many exact ties
    near = nearest_neighbours(ids, vectors, 7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in rng.choice(1500, size=40, replace=False).tolist():
        similarity = unit @ unit[i]
        expected = sorted((j for j in range(1500) if j != i), key=lambda j: (-similarity[j], ids[j]))[:7]
        assert near[i].tolist() == expected


# --------------------------------------------------------------------------- tables


@pytest.mark.slow
def test_a_table_compared_with_itself_keeps_every_neighbourhood(tables):
    same = compare_tables(tables["child"], tables["child"], k=K)
    assert len(same.ids) == same.sampled == 150 and set(same.overlap) == {1.0}
    assert same.mean_overlap == 1.0 and same.share(1.0) == 1.0
    assert all(n.in_both for row in same.changed for n in (*row.neighbours, *row.other_neighbours))


@pytest.mark.slow
def test_the_fine_tuned_child_compared_with_its_parent(tables):
    """Overlap as computed here from both tables' rows; the child's lineage names its parent and release metrics."""
    comparison = compare_tables(tables["child"], tables["parent"], k=K)
    ids = list(comparison.ids)
    assert len(ids) == 150 and all(0.0 <= o <= 1.0 for o in comparison.overlap)
    new, old = cosine_neighbours(tables["child"], ids, K), cosine_neighbours(tables["parent"], ids, K)
    assert list(comparison.overlap) == [len(new[i] & old[i]) / K for i in ids]
    assert 0.2 < comparison.mean_overlap < 1.0  # fine-tuning moved some neighbourhoods, not all
    worst = comparison.changed[0]
    assert worst.overlap == min(comparison.overlap)
    assert {n.id for n in worst.neighbours} == new[worst.id] and {n.id for n in worst.other_neighbours} == old[worst.id]
    assert [o for o in comparison.overlap if o < worst.overlap] == []
    texts = {row["id"]: row["text"] for row in corpus()}
    assert worst.excerpt == " ".join(texts[worst.id].split())

    child, parent = comparison.lineage, comparison.other_lineage
    assert (child.name, child.version, parent.name, parent.version) == ("tiny", 2, "tiny", 1)
    assert child.parent == {
        "name": "tiny",
        "version": 1,
        "fingerprint": parent.fingerprint,
        "handle": tables["parent_module"],
    }
    metrics = dict(child.metrics)
    assert metrics["probe.finetuned_holdout_accuracy"] >= 0 and metrics["training.steps"] == 20
    assert parent.parent is None and parent.metrics == () and parent.unavailable is None


@pytest.mark.slow
def test_tables_of_different_dimensions_compare_within_their_own_spaces(tables):
    comparison = compare_tables(tables["wide"], tables["parent"], k=K)
    assert (comparison.dimension, comparison.other_dimension) == (16, 8)
    ids = list(comparison.ids)
    new, old = cosine_neighbours(tables["wide"], ids, K), cosine_neighbours(tables["parent"], ids, K)
    assert list(comparison.overlap) == [len(new[i] & old[i]) / K for i in ids]
    chance = K / (len(ids) - 1)
    assert comparison.mean_overlap > 3 * chance  # both bag-of-words spaces put texts sharing words together
    assert comparison.lineage.unavailable == "not available: the module has no module.json"


@pytest.mark.slow
def test_tables_sharing_too_few_ids_and_bad_arguments_are_refused(tables, tmp_path):
    with pytest.raises(
        ReportError, match=r"share 150 of the 150 ids sampled; comparing 200 neighbours needs at least 201"
    ):
        compare_tables(tables["child"], tables["parent"], k=200, rows=5000)
    with pytest.raises(ReportError, match="k >= 1"):
        compare_tables(tables["child"], tables["parent"], k=0)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ReportError, match=re.escape(f"table {missing!r} does not exist")):
        compare_tables(tables["child"], missing)


# --------------------------------------------------------------------------- the section in a browser


@pytest.mark.slow
def test_the_section_renders_its_histogram_offline_in_chromium(tables, browser, tmp_path):
    comparison = compare_tables(tables["child"], tables["parent"], k=K)
    fragment = comparison_html(comparison)
    assert fragment.startswith('<section class="report-compare" id="compare">') and "<script src" not in fragment
    for row in comparison.changed:
        assert html.escape(row.id) in fragment and html.escape(row.excerpt) in fragment
    marked_up = dataclasses.replace(comparison.changed[0], id="<i>doc</i>", excerpt="a <b>tag</b> & more")
    escaped = comparison_html(dataclasses.replace(comparison, changed=(marked_up, *comparison.changed[1:])))
    assert "&lt;i&gt;doc&lt;/i&gt;" in escaped and "a &lt;b&gt;tag&lt;/b&gt; &amp; more" in escaped
    assert "<b>tag" not in escaped and "<i>doc" not in escaped
    page_file = tmp_path / "compare.html"
    page_file.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>compare</title>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>{fragment}</body></html>"
    )
    with browser.open(page_file.as_uri(), height=1600) as (page, log):
        page.wait_for_selector("#compare-overlap-histogram .bars path", state="attached")
        drawn = page.evaluate("document.getElementById('compare-overlap-histogram').data[0]")
        expected = [sum(1 for o in comparison.overlap if round(o * K) == j) for j in range(K + 1)]
        assert drawn["y"] == expected and sum(expected) == len(comparison.ids)  # one bar per overlap value
        assert drawn["x"] == pytest.approx([j / K for j in range(K + 1)])
        assert page.locator("#compare-overlap-histogram .bars path").count() == K + 1
        heading = page.locator("#compare h2").inner_text()
        assert heading == f"Compared with {comparison.other}"
        assert page.locator(".compare-changed tbody tr").count() == len(comparison.changed)
        assert page.locator(".compare-lineage").inner_text().count("tiny") >= 2
        assert log.console_errors == [] and log.page_errors == []
        assert log.network_requests() == []


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_the_report_command_compares_and_writes_the_projector(tables, tmp_path, capsys, browser):
    from pipelines.report.__main__ import main

    page, logdir = tmp_path / "report.html", tmp_path / "projector"
    args = [tables["child"], "-o", str(page), "--compare", tables["parent"], "--projector", str(logdir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"report: {page}" in out and f"projector: {logdir / 'projector_config.pbtxt'}" in out
    text = page.read_text()
    assert f"<h2>Compared with <code>{tables['parent']}</code></h2>" in text and "compare-overlap-histogram" in text
    assert sorted(os.listdir(logdir)) == ["metadata.tsv", "projector_config.pbtxt", "tensors.tsv"]
    with browser.open(page.as_uri()) as (opened, log):  # the section in the report page as users see it
        opened.wait_for_selector("#compare-overlap-histogram .bars path", state="attached")
        if os.environ.get("HUB_EMBED_SCREENSHOTS"):
            top = opened.evaluate("document.getElementById('compare').getBoundingClientRect().top + window.scrollY")
            clip = {"x": 0, "y": top - 10, "width": 1400, "height": 1300}
            path = os.path.join(os.environ["HUB_EMBED_SCREENSHOTS"], "compare.png")
            opened.screenshot(path=path, full_page=True, clip=clip)
        assert log.console_errors == [] and log.page_errors == [] and log.network_requests() == []

    assert (
        main([tables["child"], "-o", str(tmp_path / "no.html"), "--compare", tables["parent"], "--compare-k", "150"])
        == 2
    )
    assert "share 150 of the 150 ids sampled; comparing 150 neighbours needs at least 151" in capsys.readouterr().err
    assert not (tmp_path / "no.html").exists()

    chosen = tmp_path / "chosen"
    assert (
        main([tables["child"], "-o", str(page), "--projector", str(chosen), "--projector-fields", "content_hash"]) == 0
    )
    header, first = (chosen / "metadata.tsv").read_text().splitlines()[:2]
    assert header == "id\tcontent_hash" and len(first.split("\t")[1]) > 0
    refused = tmp_path / "refused"
    assert main([tables["child"], "-o", str(page), "--projector", str(refused), "--projector-fields", "lang"]) == 2
    assert "projector field 'lang' is not a column" in capsys.readouterr().err
    assert not refused.exists()


@pytest.mark.slow
def test_a_comparing_report_loads_no_plotly_validators(tables, tmp_path):
    """Plotly's Python validators (`plotly.graph_objects`) cost seconds to import; the report draws without them."""
    page = tmp_path / "report.html"
    command = [sys.executable, "-X", "importtime", "-m", "pipelines.report", tables["child"], "-o", str(page)]
    done = subprocess.run([*command, "--compare", tables["parent"]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "pipelines.report.compare_section" in imported and "plotly.io" in imported
    assert not {name for name in imported if name.startswith(("plotly.graph_objects", "plotly.validators"))}
    assert "compare-overlap-histogram" in page.read_text()
