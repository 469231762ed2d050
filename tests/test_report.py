"""The HTML report: written by real embedding jobs (tiny modules) and by the command, opened in headless Chromium.

The browser (tests/fixtures/browser.py) records console errors, page errors and every request: a report must
draw its map, histograms and neighbour lists from what it inlines, and fetch nothing. Screenshots go to
`$HUB_EMBED_SCREENSHOTS` when set (`make screenshots` writes the docs' images there), else to tmp_path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import shutil
import types

import numpy as np
import pytest
from PIL import Image

from pipelines import embed
from pipelines.embedding import sinks
from pipelines.publish.source import open_table
from pipelines.report.__main__ import main as report_main
from pipelines.report.build import REPORT_FILE
from pipelines.report.dead_letters import read_dead_letters
from pipelines.report.projection import project
from pipelines.report.vector_stats import vector_stats

pytestmark = pytest.mark.xdist_group("test_report")  # one worker builds the module's tables once

SCREENSHOTS_ENV = "HUB_EMBED_SCREENSHOTS"
TOPICS = {
    "fruit": ["apple", "pear", "plum", "cherry", "melon", "grape"],
    "vehicles": ["car", "truck", "bus", "tram", "bike", "train"],
    "weather": ["rain", "snow", "wind", "storm", "sun", "fog"],
}
WORDS = ["red", "fast", "old", "small", "quiet", "bright", "heavy", "green"]
# Rows the tiny text module gives one vector (it lowercases and splits on spaces) though their contents differ.
NEAR_DUPLICATES = [("near-a", "Apple pie with cream"), ("near-b", "apple PIE with CREAM")]
EXACT = "three rows hold exactly this text"
NEIGHBOUR_ROWS, NEIGHBOURS = 6, 5


def _text_rows() -> list[dict]:
    rows = []
    for i in range(150):
        topic = list(TOPICS)[i % 3]
        words = TOPICS[topic]
        text = f"{words[i % 6]} {WORDS[i % 8]} {words[(i // 3) % 6]} {WORDS[(i // 7) % 8]} number{i % 11}"
        rows.append({"id": f"t{i:03d}", "text": text, "lang": ["en", "fr", "de"][i % 5 % 3], "topic": topic})
    rows += [{"id": i, "text": t, "lang": "en", "topic": "fruit"} for i, t in NEAR_DUPLICATES]
    rows += [{"id": f"exact-{n}", "text": EXACT, "lang": "en", "topic": "other"} for n in range(3)]
    rows += [{"id": "no-text-1", "lang": "en"}, {"id": "no-text-2", "lang": "fr"}, {"id": "number", "text": 42}]
    return rows


def _photos(directory: pathlib.Path) -> pathlib.Path:
    """60 small PNG photos (gradients of many colours, several sizes) and one file that is not an image."""
    directory.mkdir()
    rng = np.random.default_rng(7)
    for i in range(60):
        base = rng.integers(0, 256, 3)
        h, w = (16, 24) if i % 2 else (20, 14)
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(0, 80, 3)
        pixels = np.clip(base + ramp + np.zeros((h, 1, 1)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / f"photo-{i:02d}.png")
    (directory / "broken.png").write_bytes(b"not a png at all")
    return directory


def _embed(args: list[str], cache: pathlib.Path) -> types.SimpleNamespace:
    """Runs `pipelines.embed` in-process; its exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setenv("HUB_EMBED_CACHE_DIR", str(cache))
        rc = embed.main(args)
    return types.SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope="module")
def text_table(tiny, tmp_path_factory):
    """A jsonl table written by a real job, its report written by the job at its commit (coloured by `topic`)."""
    root = tmp_path_factory.mktemp("report-text")
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in _text_rows()))
    output = root / "table"
    args = ["--input", str(source), "--id-field", "id", "--module", tiny.text, "--output", str(output)]
    args += ["--passthrough", "text,lang,topic", "--max-error-fraction", "0.1", "--report-color-by", "topic"]
    run = _embed(args, root / "cache")
    assert run.rc == 0, run.err
    return types.SimpleNamespace(path=str(output), run=run)


@pytest.fixture(scope="module")
def image_table(tiny, tmp_path_factory):
    """An image table whose job's report fails (its comparison table is missing); the command writes it after."""
    root = tmp_path_factory.mktemp("report-images")
    photos = _photos(root / "photos")
    output = root / "table"
    args = ["--input", str(photos / "*.png"), "--module", tiny.image, "--output", str(output)]
    run = _embed(
        [*args, "--max-error-fraction", "0.1", "--report-compare", str(root / "no-such-table")], root / "cache"
    )
    return types.SimpleNamespace(path=str(output), photos=photos, run=run)


def _screenshot_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = pathlib.Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _save_screenshot(page, path: pathlib.Path) -> None:
    """A full-page screenshot, its colours reduced so the PNG stays small."""
    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw), full_page=True)
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()


PLOTS = "Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => [d.id, d.data.map(t => t.x.length)])"


def _hover_first_point(page) -> None:
    point = page.locator("#map-plot .scatterlayer .point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] - 20, box["y"] - 20)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.wait_for_function("document.querySelector('.hover-card strong') !== null", timeout=5000)


def test_the_job_writes_its_report_at_the_commit_and_says_where(text_table):
    report = os.path.join(text_table.path, REPORT_FILE)
    assert f"report: {report}" in text_table.run.out
    assert os.path.isfile(report)
    assert "warning" not in text_table.run.err
    # Parquet readers skip `_` files: the table reads as before, the report beside it.
    assert len(sinks.read_table(text_table.path)) == 155


def test_the_text_report_in_a_browser_shows_map_histograms_and_neighbours(text_table, browser, tmp_path):
    report = pathlib.Path(text_table.path, REPORT_FILE)
    html = report.read_text()
    with browser.open(report.as_uri(), width=1200) as (page, log):
        page.wait_for_selector("#map-plot .scatterlayer .point")
        plots = dict(page.evaluate(PLOTS))
        # Every row is on the map (the table is smaller than the sample), one trace per topic.
        assert sum(plots["map-plot"]) == 155
        assert len(plots["map-plot"]) == 4
        legend = page.evaluate("document.getElementById('map-plot').data.map(t => t.name)")
        assert sorted(legend) == ["fruit", "other", "vehicles", "weather"]
        assert plots["norm-histogram"] == [40] and plots["nearest-histogram"] == [40]
        assert plots["dead-letters-by-stage"] == [1]
        assert page.locator("ol.neighbours").count() == NEIGHBOUR_ROWS
        assert page.locator("ol.neighbours li.neighbour").count() == NEIGHBOUR_ROWS * NEIGHBOURS
        neighbour_text = page.locator("ol.neighbours").first.inner_text()
        assert any(word in neighbour_text for words in TOPICS.values() for word in words)  # texts, not ids only
        _hover_first_point(page)
        card = page.locator(".hover-card").inner_text()
        assert card.split("\n")[0] in {row["id"] for row in _text_rows()}
        _save_screenshot(page, _screenshot_dir(tmp_path) / "report-text.png")
        assert log.console_errors == [] and log.page_errors == []
        assert log.network_requests() == []
    assert html.count("Plotly.newPlot") == 4  # ... and plotly.js itself once
    assert html.count("/*! For license information please see plotly") <= 1


def test_the_text_report_counts_what_the_table_holds(text_table):
    table = open_table(text_table.path)
    html = pathlib.Path(text_table.path, REPORT_FILE).read_text()
    stats = vector_stats(table)
    assert stats.rows == 155 and stats.exact_duplicates == 2 and stats.zero == 0 and stats.non_finite == 0
    assert "2 rows are exact duplicates" in html
    dead = read_dead_letters(table)
    assert dead.total == 3 == len(sinks.read_errors(text_table.path))
    assert {(g.stage, g.count) for g in dead.groups} == {("read", 2), ("read", 1)}
    assert "no-text-1" in html and "3 rows failed" in html
    # The planted pair differs in case only: one vector, two contents; the exact duplicates are not a group.
    assert "near-a" in html.split('id="near-duplicates"')[1] and "near-b" in html.split('id="near-duplicates"')[1]
    assert "exact-1" not in html.split('id="near-duplicates"')[1].split("</section>")[0]
    # The run's facts come from the manifest, the module handle and config without secrets.
    assert table.metadata["fingerprint"] in html and "rows in" in html and "docs.jsonl" in html


def test_a_failed_report_leaves_the_run_committed_with_one_warning(image_table):
    run = image_table.run
    assert run.rc == 0
    assert sinks.read_table_manifest(image_table.path) is not None
    warnings = [line for line in run.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "its report was not written" in warnings[0] and "no-such-table" in warnings[0]
    assert "report:" not in run.out
    assert not os.path.exists(os.path.join(image_table.path, REPORT_FILE))


def test_the_image_report_in_a_browser_shows_thumbnails(image_table, browser, tmp_path, capsys):
    output = tmp_path / "images.html"
    assert report_main([image_table.path, "-o", str(output), "--sample-rows", "40"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {output}"
    with browser.open(output.as_uri(), width=1200) as (page, log):
        page.wait_for_selector("#map-plot .scatterlayer .point")
        plots = dict(page.evaluate(PLOTS))
        assert plots["map-plot"] == [40]  # the sample, not the 60 rows
        assert "40 of the table's 60 rows" in page.locator("#map").inner_text()
        assert page.locator("ol.neighbours li.neighbour").count() == NEIGHBOUR_ROWS * NEIGHBOURS
        thumbs = page.locator("#neighbours img.thumb")
        assert thumbs.count() == NEIGHBOUR_ROWS * (NEIGHBOURS + 1)
        sources = [thumbs.nth(i).get_attribute("src") for i in range(thumbs.count())]
        assert all(src.startswith("data:image/jpeg;base64,") for src in sources)
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        _hover_first_point(page)
        assert page.locator(".hover-card img").get_attribute("src").startswith("data:image/jpeg;base64,")
        assert "broken.png" in page.locator("#dead-letters").inner_text()
        _save_screenshot(page, _screenshot_dir(tmp_path) / "report-images.png")
        assert log.console_errors == [] and log.page_errors == []
        assert log.network_requests() == []


def test_a_comparison_is_a_section_of_the_page(text_table, tmp_path, capsys):
    output = tmp_path / "compared.html"
    assert report_main([text_table.path, "-o", str(output), "--compare", text_table.path, "--compare-k", "3"]) == 0
    html = output.read_text()
    assert 'id="compare"' in html and 'href="#compare"' in html
    assert html.index('id="neighbours"') < html.index('id="compare"')


def test_bad_requests_exit_2_naming_the_bad_value_and_write_nothing(text_table, tmp_path, capsys):
    output = tmp_path / "never.html"
    assert report_main([text_table.path, "-o", str(output), "--color-by", "colour"]) == 2
    err = capsys.readouterr().err
    assert "--color-by 'colour'" in err and "text, lang, topic, content_hash" in err
    assert report_main([str(tmp_path / "nowhere"), "-o", str(output)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report_main([text_table.path, "-o", str(output), "--near-duplicate-threshold", "1.5"]) == 2
    assert "1.5" in capsys.readouterr().err
    umap_installed = importlib.util.find_spec("umap") is not None
    rc = report_main([text_table.path, "-o", str(output), "--map", "umap"])
    if umap_installed:  # umap-learn is a dev dependency: the map is UMAP's
        assert rc == 0 and "UMAP of" in output.read_text()
    else:
        assert rc == 2 and "umap-learn" in capsys.readouterr().err
        assert not output.exists()


def test_no_report_skips_it_and_removes_the_replaced_tables(tiny, tmp_path):
    source = tmp_path / "few.txt"
    source.write_text("one line\nanother line\n")
    args = ["--input", str(source), "--module", tiny.text, "--output", str(tmp_path / "t")]
    assert _embed(args, tmp_path).rc == 0
    assert (tmp_path / "t" / REPORT_FILE).exists()
    run = _embed([*args, "--overwrite", "--no-report"], tmp_path)
    assert run.rc == 0 and "report:" not in run.out
    assert not (tmp_path / "t" / REPORT_FILE).exists()  # it described the table this run replaced


def test_the_command_writes_projector_files_beside_the_report(text_table, tmp_path, capsys):
    output, projector = tmp_path / "report.html", tmp_path / "projector"
    args = [text_table.path, "-o", str(output), "--projector", str(projector), "--projector-rows", "20"]
    assert report_main(args) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"projector: {projector / 'projector_config.pbtxt'}")
    assert output.exists() and len((projector / "tensors.tsv").read_text().splitlines()) == 20
    (tmp_path / "a-file").write_text("")
    assert report_main([text_table.path, "-o", str(tmp_path / "x.html"), "--projector", str(tmp_path / "a-file")]) == 2
    assert "is not a directory" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


def test_the_page_shows_no_credentials_from_the_manifest(text_table, tmp_path, capsys):
    table = tmp_path / "copied"
    shutil.copytree(text_table.path, table)
    manifest = json.loads((table / "_SUCCESS").read_text())
    manifest["table"]["module"] = "https://hub.example.com/m.tar.gz?token=s3cr3t-token"
    manifest["config"]["reuse"] = "gs://reader:pa55word@bucket/old"
    manifest["reuse"] = {"used": False, "table": "s3://key:pa55word@bucket/old", "run_id": None, "reason": "none"}
    (table / "_SUCCESS").write_text(json.dumps(manifest))
    assert report_main([str(table), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "https://hub.example.com/m.tar.gz" in html and "gs://bucket/old" in html and "s3://bucket/old" in html
    assert "s3cr3t" not in html and "pa55word" not in html


def test_umap_maps_separate_clusters_apart_and_the_same_vectors_the_same_way():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16)) * 5
    vectors = np.concatenate([c + rng.normal(scale=0.1, size=(40, 16)) for c in centres]).astype(np.float32)
    first, second = project(vectors, "umap"), project(vectors, "umap")
    assert first.shape == (80, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)
    a, b = first[:40], first[40:]
    spread = max(np.linalg.norm(a - a.mean(0), axis=1).max(), np.linalg.norm(b - b.mean(0), axis=1).max())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > spread
