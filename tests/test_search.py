"""Search: exact over a committed table, through the index of a published collection, with the module that made it.

Real tables from the real embedding pipeline and the tiny modules, a real PostgreSQL with pgvector
(`tests/fixtures/postgres.py`), and the real command line (`pipelines.search.__main__.main`, in-process).
"""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
from PIL import Image

from pipelines.embedding import sinks
from pipelines.publish.__main__ import main as publish_main
from pipelines.publish.source import open_table
from pipelines.publish.vector_space import VectorSpace
from pipelines.search.__main__ import main as search_main
from pipelines.search.exact import scores
from pipelines.search.queries import QueryEncoder
from tests.fixtures import tiny_modules as tm
from tests.fixtures.postgres import PASSWORD, PUBLISHER, embed_table

TEXTS = [f"sentence {i} about {'apples and pears' if i % 3 else 'cars and trucks'} number {i * 7}" for i in range(60)]
ROWS = [(f"t{i}", TEXTS[i], "en" if i % 2 else "fr") for i in range(60)]
COLORS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 210), "gray": (128, 128, 128)}


@pytest.fixture(scope="session")
def corpus(tiny, tmp_path_factory):
    """A text table and an image table, each with its module (in a directory of its own, so it can move)."""
    root = tmp_path_factory.mktemp("search")
    text_module = shutil.copytree(tiny.text, root / "text-module")
    photos = root / "photos"
    photos.mkdir()
    for name, color in COLORS.items():
        Image.new("RGB", (12, 9), color).save(photos / f"{name}.png")
    images = root / "images"
    from pipelines import embed

    assert embed.main(["--input", str(photos / "*.png"), "--module", tiny.image, "--output", str(images)]) == 0
    return types.SimpleNamespace(
        text=embed_table(root / "text", str(text_module), ROWS),
        module=str(text_module),
        images=str(images),
        photos=photos,
        other_module=tm.build_text_module(str(root / "other-module"), seed=5),
    )


@pytest.fixture
def published(postgres, corpus):
    """A database holding the text table as collection `docs`; returns its URI (with the publisher's password)."""
    uri = postgres.uri(postgres.database(), PUBLISHER, PASSWORD)
    assert publish_main([corpus.text, "--to", uri, "--collection", "docs"]) == 0
    return uri


def search(capsys, *args: str) -> types.SimpleNamespace:
    rc = search_main(list(args))
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()] if "--json" in args and rc == 0 else []
    return types.SimpleNamespace(rc=rc, out=out.out, err=out.err, results=lines)


def brute_force(table: str, query: np.ndarray, k: int, metric: str = "cosine") -> list[tuple[str, float]]:
    rows = sinks.read_table(table).to_pylist()
    vectors = np.asarray([r["embedding"] for r in rows], np.float32)
    found = scores(metric, vectors, query[None, :])[:, 0]
    order = sorted(range(len(rows)), key=lambda i: (-found[i], rows[i]["id"]))[:k]
    return [(rows[i]["id"], float(found[i])) for i in order]


def encoder(table: str) -> QueryEncoder:
    opened = open_table(table)
    return QueryEncoder(VectorSpace.of_table(opened.metadata, opened.config))


# --------------------------------------------------------------------------- exact search over a table


@pytest.mark.parametrize("metric", ["cosine", "inner_product", "l2"])
def test_table_search_is_exact_best_first_with_the_rows_columns(corpus, capsys, metric):
    queries = ["apples and pears number 14", "cars and trucks"]
    result = search(
        capsys,
        "--table",
        corpus.text,
        "--query",
        queries[0],
        "--query",
        queries[1],
        "-k",
        "5",
        "--json",
        "--metric",
        metric,
    )
    assert result.rc == 0, result.err
    vectors = encoder(corpus.text).texts(queries)
    by_id = {r[0]: r[2] for r in ROWS}
    for line, query, vector in zip(result.results, queries, vectors):
        assert line["query"] == query
        expected = brute_force(corpus.text, vector, 5, metric)
        assert [h["id"] for h in line["hits"]] == [i for i, _ in expected]
        assert [h["score"] for h in line["hits"]] == pytest.approx([s for _, s in expected], abs=1e-5)
        assert all(h["lang"] == by_id[h["id"]] for h in line["hits"])


def test_a_query_is_embedded_exactly_as_the_pipeline_embedded_its_rows(corpus, capsys):
    table = {r["id"]: np.asarray(r["embedding"], np.float32) for r in sinks.read_table(corpus.text).to_pylist()}
    assert np.array_equal(encoder(corpus.text).texts([TEXTS[7]])[0], table["t7"])
    result = search(capsys, "--table", corpus.text, "--query", TEXTS[7], "-k", "3")
    assert result.rc == 0
    first = result.out.splitlines()[2].split()
    assert first[0] == "1" and float(first[1]) == pytest.approx(1.0, abs=1e-5) and first[2] == "t7"
    assert result.out.splitlines()[1].split() == ["rank", "score", "id", "lang"]


# --------------------------------------------------------------------------- through a published collection


def test_collection_search_through_the_index_finds_what_exact_search_finds(corpus, published, capsys):
    args = ["--query", "apples and pears number 21", "-k", "10", "--json"]
    indexed = search(capsys, "--to", published, "--collection", "docs", *args)
    exact = search(capsys, "--table", corpus.text, *args)
    assert indexed.rc == exact.rc == 0, indexed.err
    hits, expected = indexed.results[0]["hits"], exact.results[0]["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected], abs=1e-5)
    assert all("lang" in h for h in hits) and PASSWORD not in indexed.out + indexed.err


@pytest.mark.parametrize(
    "flags", [("--metric", "inner_product", "--index", "ivfflat"), ("--halfvec", "--metric", "l2")]
)
def test_a_collection_is_searched_with_its_own_metric_and_vector_type(corpus, postgres, capsys, flags):
    uri = postgres.uri(postgres.database(), PUBLISHER, PASSWORD)
    assert publish_main([corpus.text, "--to", uri, "--collection", "docs", *flags]) == 0
    capsys.readouterr()
    metric = flags[flags.index("--metric") + 1]
    query = "cars and trucks number 7"
    result = search(capsys, "--to", uri, "--collection", "docs", "--query", query, "-k", "4", "--json")
    assert result.rc == 0, result.err
    expected = brute_force(corpus.text, encoder(corpus.text).texts([query])[0], 4, metric)
    hits = result.results[0]["hits"]
    assert [h["id"] for h in hits] == [i for i, _ in expected]
    assert [h["score"] for h in hits] == pytest.approx(
        [s for _, s in expected], abs=2e-2 if "--halfvec" in flags else 1e-5
    )


# --------------------------------------------------------------------------- the module, and bad input


def test_queries_need_the_collections_own_module(corpus, published, capsys, tmp_path):
    other = search(capsys, "--to", published, "--collection", "docs", "--query", "x", "--module", corpus.other_module)
    recorded = open_table(corpus.text).metadata["fingerprint"]
    assert other.rc == 2 and recorded in other.err and "fingerprint" in other.err
    moved = tmp_path / "moved-module"
    shutil.move(corpus.module, moved)
    try:
        missing = search(capsys, "--table", corpus.text, "--query", "x")
        assert missing.rc == 2 and "--module" in missing.err
        assert search(capsys, "--table", corpus.text, "--query", "x", "--module", str(moved)).rc == 0
    finally:
        shutil.move(moved, corpus.module)


def test_image_queries_search_an_image_table(corpus, capsys):
    result = search(
        capsys, "--table", corpus.images, "--query-image", str(corpus.photos / "green.png"), "-k", "2", "--json"
    )
    assert result.rc == 0, result.err
    top = result.results[0]["hits"][0]
    assert top["id"] == str(corpus.photos / "green.png") and top["score"] == pytest.approx(1.0, abs=1e-5)
    text = search(capsys, "--table", corpus.images, "--query", "green")
    assert text.rc == 2 and "--query-image" in text.err


def test_bad_queries_and_targets_exit_2_without_a_password(corpus, published, capsys, tmp_path):
    wrong = published.replace(PASSWORD, "Wr0ng-pass-zz9")
    cases = {
        "no published collection": ["--to", published, "--collection", "nope", "--query", "x"],
        "needs --collection": ["--to", published, "--query", "x"],
        "empty or whitespace-only": ["--table", corpus.text, "--query", "  "],
        "-k must be a positive integer": ["--table", corpus.text, "--query", "x", "-k", "0"],
        "not a committed table": ["--table", str(tmp_path), "--query", "x"],
        "refused the user name or password": ["--to", wrong, "--collection", "docs", "--query", "x"],
        "not a valid identifier": ["--to", published, "--collection", "Docs", "--query", "x"],
        "cannot be used": ["--table", corpus.images, "--query-image", str(tmp_path / "none.png")],
    }
    (tmp_path / "part.parquet").write_bytes(b"not committed")
    for message, args in cases.items():
        result = search(capsys, *args)
        assert result.rc == 2 and message in result.err, (message, result.err)
        assert PASSWORD not in result.err and "Wr0ng-pass-zz9" not in result.err
