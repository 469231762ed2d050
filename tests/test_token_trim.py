"""Per-token outputs cut to each row's own tokens, whatever the batching (`pipelines.embedding.token_trim`)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import embed, inspect
from pipelines.embedding import config, model_spec, sinks, token_trim
from pipelines.hub import description
from tests.fixtures import tiny_modules as tm

SHORT = "Two words"
LONG = "one two three four five six seven eight nine ten eleven"


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> str:
    """The ELMo-`default`-shaped module: sentences in, per-word vectors and `sequence_len` out."""
    return tm.build_sentence_tokens_module(str(tmp_path_factory.mktemp("modules") / "sentences"))


def _embed(module: str, tmp_path, name: str, texts: list[str], *args: str) -> dict[str, np.ndarray]:
    """Runs the embedding job on `texts` (one call: batch 64); returns text -> stored per-token vectors."""
    src = tmp_path / f"{name}.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / name
    assert embed.main(["--input", str(src), "--module", module, "--batch-size", "64", "--output", str(out), *args]) == 0
    rows = sinks.read_table(str(out)).to_pylist()
    assert len(rows) == len(texts)
    by_line = {int(r["id"].rsplit(":", 1)[1]): np.asarray(r["embedding"], np.float32) for r in rows}
    return {text: by_line[i + 1] for i, text in enumerate(texts)}


def test_a_row_gets_its_own_tokens_alone_or_with_longer_rows(sentences, tmp_path):
    args = ("--output-key", "elmo")
    alone = _embed(sentences, tmp_path, "alone", [SHORT], *args)
    together = _embed(sentences, tmp_path, "together", [LONG, SHORT, "three more words"], *args)
    reference = tm.SentenceTokensModule()
    assert alone[SHORT].shape == (2, 5)
    np.testing.assert_array_equal(together[SHORT], alone[SHORT])
    np.testing.assert_allclose(alone[SHORT], reference.word_vectors(SHORT), atol=1e-6)
    assert together[LONG].shape == (11, 5)
    np.testing.assert_allclose(together[LONG], reference.word_vectors(LONG), atol=1e-6)
    manifest = sinks.read_table_manifest(str(tmp_path / "together"))
    assert manifest["table"]["token_trim"] == "length:sequence_len"


def test_an_explicit_length_key_settles_two_int_outputs(sentences, tmp_path):
    args = ("--signature", "counts", "--output-key", "word_emb", "--output-length-key", "num_words")
    rows = _embed(sentences, tmp_path, "counts", [LONG, SHORT], *args)
    assert rows[SHORT].shape == (2, 5) and rows[LONG].shape == (11, 5)


def _spec(module: str, tmp_path, **model: str) -> model_spec.ModelSpec:
    cfg = config.from_dict({"input": str(tmp_path / "x.txt"), "output": str(tmp_path / "o"), "module": module, **model})
    return model_spec.for_module(cfg, description.describe(module))


@pytest.mark.parametrize(
    "model, message",
    [
        (
            dict(signature="unmarked", output_key="word_emb"),
            r"Output 'word_emb' of signature 'unmarked' is per token .* no mask output .*--output-length-key",
        ),
        (
            dict(signature="counts", output_key="word_emb"),
            r"several int \[N\] outputs \('num_chars', 'num_words'\) and none of them alone named \*len\*.*--output-length-key",
        ),
        (
            dict(output_key="elmo", output_length_key="nope"),
            r"output_length_key 'nope' cannot trim output 'elmo' of signature 'default' \(not an output of it\).*"
            r"Valid: 'sequence_len'",
        ),
        (
            dict(output_key="elmo", output_length_key="default"),
            r"output_length_key 'default' cannot trim .*\(float32\[None, 5\]\)",
        ),
        (dict(signature="unmarked", output_key="word_emb", output_length_key="default"), r"Valid: none"),
        (
            dict(output_length_key="sequence_len"),
            r"trims per-token outputs; output 'default' .* \(one vector per row\)",
        ),
    ],
)
def test_untrimmable_outputs_and_bad_length_keys_are_refused_before_the_run(sentences, tmp_path, model, message):
    (tmp_path / "x.txt").write_text("a text\n")
    with pytest.raises(config.ConfigError, match=message):
        _spec(sentences, tmp_path, **model)


def test_the_command_refuses_an_untrimmable_output_with_exit_2(sentences, tmp_path, capsys):
    (tmp_path / "x.txt").write_text("a text\n")
    argv = [
        "--input",
        str(tmp_path / "x.txt"),
        "--module",
        sentences,
        "--signature",
        "unmarked",
        "--output-key",
        "word_emb",
        "--output",
        str(tmp_path / "o"),
    ]
    assert embed.main(argv) == 2
    assert "--output-length-key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_how_each_output_is_cut_is_found_by_shape(sentences, tiny, tmp_path):
    (tmp_path / "x.txt").write_text("a text\n")
    assert _spec(sentences, tmp_path, output_key="elmo").trim == token_trim.TokenTrim("length", "sequence_len")
    assert _spec(tiny.text, tmp_path, signature="tokens", output_key="elmo").trim == token_trim.TokenTrim(
        "fed", "sequence_len"
    )
    assert _spec(sentences, tmp_path, output_key="default").trim is None


def test_inspect_says_which_output_cuts_which(sentences):
    report = inspect.render_text(description.describe(sentences))
    lines = {tuple(line.split()[:3]): line for line in report.splitlines() if line.strip()}
    assert lines[("default", "output", "elmo")].endswith("cut by length output 'sequence_len'")
    assert lines[("unmarked", "output", "word_emb")].endswith(
        "refused by embed: no mask or length output (see --output-length-key)"
    )
    assert lines[("default", "output", "sequence_len")].endswith("[?]")


def test_a_module_whose_lengths_do_not_fit_its_output_is_an_error():
    embeddings = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"do not fit the per-token output's 2 rows of 3 positions"):
        token_trim.cut(token_trim.TokenTrim("length", "n"), embeddings, {"n": np.array([1, 4])}, None)
    with pytest.raises(ValueError, match=r"mask output 'm' has shape \[2, 2\], expected \[2, 3\]"):
        token_trim.cut(token_trim.TokenTrim("mask", "m"), embeddings, {"m": np.ones((2, 2))}, None)
    rows = token_trim.cut(token_trim.TokenTrim("mask", "m"), embeddings, {"m": np.array([[1, 0, 1], [0, 0, 0]])}, None)
    assert [r.shape for r in rows] == [(2, 4), (0, 4)]
