"""TF1 Hub-format modules as tensorflow_hub exported them: inspect, embed, export (migration) and fine-tune.

The modules (`tests/fixtures/tf1_hub.py`) have MetaGraphs for `{}` and
`{"train"}`, a vocabulary asset behind an in-graph table, in-graph string
splitting, signatures with dicts of outputs and `get_variable` variables whose
trained values are only in the checkpoint. Expected values come from NumPy
(`tf1_hub.*_reference`), not from the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from pipelines import embed, export
from pipelines import inspect as inspect_cli
from pipelines.embedding import sinks
from pipelines.export import cli as export_cli
from pipelines.export import tf1_migrate
from pipelines.finetune import cli as finetune_cli
from pipelines.finetune import release
from pipelines.hub import description, fingerprints, loading
from tests.fixtures import finetune_data
from tests.fixtures import tf1_hub as th

NNLM_TEXTS = ["The quick brown fox.", "a lazy dog, a cat!", "zebra", "the"]
# One long row and short ones, all in one module call (the batch size is larger than the input).
ELMO_TEXTS = {
    "long": "the quick brown fox jumps over the lazy dog on the mat",
    "short": "a cat",
    "oov": "zebra sat",
    "one": "dog",
}


@pytest.fixture(scope="module")
def tf1(tmp_path_factory) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("tf1-modules")
    return types.SimpleNamespace(
        nnlm=th.build_nnlm_like(str(root / "nnlm")), elmo=th.build_elmo_like(str(root / "elmo"))
    )


@pytest.fixture(scope="module")
def migrated(tf1, tmp_path_factory) -> types.SimpleNamespace:
    """Both modules exported (migrated) through the export tool's command line."""
    root = str(tmp_path_factory.mktemp("migrated"))
    for name in ("nnlm", "elmo"):
        assert export_cli.main(["--source", getattr(tf1, name), "--root", root, "--name", f"{name}-like"]) == 0
    return types.SimpleNamespace(
        root=root, nnlm=export.version_dir(root, "nnlm-like", 1), elmo=export.version_dir(root, "elmo-like", 1)
    )


def _saved_model(path: str):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _elmo_row(module, signature: str, text: str) -> dict[str, np.ndarray]:
    """One row through a loaded module's signature, cut to its own tokens."""
    tokens = text.split()
    if signature == "default":
        out = module.signatures["default"](default=tf.constant([text]))
    else:
        out = module.signatures["tokens"](tokens=tf.constant([tokens]), sequence_len=tf.constant([len(tokens)]))
    n = int(out["sequence_len"][0])
    return {
        "default": out["default"][0].numpy(),
        "elmo": out["elmo"][0, :n].numpy(),
        "word_emb": out["word_emb"][0, :n].numpy(),
    }


# --------------------------------------------------------------------------- the fixtures themselves


def test_fixtures_have_the_structure_tensorflow_hub_exported(tf1):
    for path in (tf1.nnlm, tf1.elmo):
        with open(os.path.join(path, "tfhub_module.pb"), "rb") as f:
            assert f.read() == b"\x08\x03"  # ModuleDef{format: FORMAT_V3}
        tf1_migrate.check_module_def(path)
        assert os.listdir(os.path.join(path, "assets")) == ["tokens.txt"]
        graphs = {tuple(mg.meta_info_def.tags): mg for mg in _saved_model(path).meta_graphs}
        assert set(graphs) == {(), ("train",)}
        for mg in graphs.values():
            assert not mg.HasField("saver_def")  # hub wrote no saver, main op nor legacy init op
            assert {"table_initializer", "asset_filepaths", "saved_model_assets", "variables"} <= set(mg.collection_def)
            assert "saved_model_main_op" not in mg.collection_def and "legacy_init_op" not in mg.collection_def
            ops = {n.op for n in mg.graph_def.node}
            assert {"HashTableV2", "InitializeTableFromTextFileV2", "StringSplit", "VarHandleOp"} <= ops
            consts = [n for n in mg.graph_def.node if n.name == "vocab_file"]
            assert consts[0].attr["value"].tensor.string_val == [th.ASSET_PLACEHOLDER]
    elmo = {tuple(mg.meta_info_def.tags): mg for mg in _saved_model(tf1.elmo).meta_graphs}
    assert set(elmo[()].signature_def) == {"default", "tokens"}
    assert set(elmo[()].signature_def["tokens"].inputs) == {"tokens", "sequence_len"}
    dropout = lambda mg: any("dropout" in n.name for n in mg.graph_def.node)  # noqa: E731
    assert dropout(elmo[("train",)]) and not dropout(elmo[()])


def test_tf1_modules_compute_what_numpy_says(tf1):
    nnlm = loading.load(tf1.nnlm)
    out = nnlm.signatures["default"](default=tf.constant(NNLM_TEXTS))
    assert set(out) == {"default"}
    np.testing.assert_allclose(out["default"].numpy(), th.nnlm_reference(NNLM_TEXTS), atol=1e-6)
    elmo = loading.load(tf1.elmo)
    for signature in ("default", "tokens"):
        for text in ELMO_TEXTS.values():
            got, want = _elmo_row(elmo, signature, text), th.elmo_reference(text.split())
            for key in want:
                np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=f"{signature}/{key}: {text}")


def test_inspect_shows_signatures_and_outputs(tf1, capsys):
    assert inspect_cli.main([tf1.elmo, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "tf1_hub" and data["fingerprint"] == fingerprints.fingerprint_dir(tf1.elmo)
    sigs = data["signatures"]
    assert sorted(sigs) == ["default", "tokens"]
    assert sigs["tokens"]["inputs"] == [
        {"name": "sequence_len", "dtype": "int32", "shape": [None]},
        {"name": "tokens", "dtype": "string", "shape": [None, None]},
    ]
    assert {o["name"]: o["shape"] for o in sigs["default"]["outputs"]} == {
        "default": [None, 5],
        "elmo": [None, None, 5],
        "sequence_len": [None],
        "word_emb": [None, None, 5],
    }
    assert inspect_cli.main([tf1.nnlm]) == 0
    text = capsys.readouterr().out
    assert "TF1 Hub format" in text
    assert "(TF1 Hub format: `python -m pipelines.export --source PATH --root ROOT --name NAME` migrates it" in text
    assert [line.split()[:4] for line in text.splitlines() if line.startswith("default ")] == [
        ["default", "input", "default", "string"],
        ["default", "output", "default", "float32"],
    ]


# --------------------------------------------------------------------------- embedding jobs


def _embed(tmp_path, module: str, texts: dict[str, str], *flags: str, name: str = "out") -> dict[str, np.ndarray]:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    out = tmp_path / name
    assert (
        embed.main(
            [
                "--input",
                str(src),
                "--id-field",
                "id",
                "--module",
                module,
                "--batch-size",
                "64",
                "--output",
                str(out),
                *flags,
            ]
        )
        == 0
    )
    return {r["id"]: np.asarray(r["embedding"], dtype=np.float32) for r in sinks.read_table(str(out)).to_pylist()}


def test_embed_nnlm_like(tf1, tmp_path):
    rows = _embed(tmp_path, tf1.nnlm, {f"r{i}": t for i, t in enumerate(NNLM_TEXTS)})
    np.testing.assert_allclose(
        np.stack([rows[f"r{i}"] for i in range(len(NNLM_TEXTS))]), th.nnlm_reference(NNLM_TEXTS), atol=1e-5
    )


@pytest.mark.parametrize("signature", ["default", "tokens"])
def test_embed_elmo_like_every_output(tf1, tmp_path, signature):
    for key in ("default", "elmo", "word_emb"):
        rows = _embed(tmp_path, tf1.elmo, ELMO_TEXTS, "--signature", signature, "--output-key", key, name=key)
        for row_id, text in ELMO_TEXTS.items():
            want = th.elmo_reference(text.split())[key]
            assert rows[row_id].shape == want.shape, f"{signature}/{key} {row_id}"
            np.testing.assert_allclose(rows[row_id], want, atol=1e-5, err_msg=f"{signature}/{key} {row_id}")


def test_per_token_rows_do_not_depend_on_the_rows_they_were_batched_with(tf1, tmp_path):
    """ELMo's own example: signature default (raw sentences), output elmo, trimmed by its sequence_len output."""
    flags = ("--signature", "default", "--output-key", "elmo")
    alone = _embed(tmp_path, tf1.elmo, {"short": ELMO_TEXTS["short"]}, *flags, name="alone")
    batched = _embed(
        tmp_path, tf1.elmo, {"short": ELMO_TEXTS["short"], "long": ELMO_TEXTS["long"]}, *flags, name="batched"
    )
    assert alone["short"].shape == (2, 5) and batched["long"].shape == (12, 5)
    np.testing.assert_array_equal(batched["short"], alone["short"])


def test_the_length_output_is_not_an_embedding(tf1, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("a cat\n")
    argv = ["--input", str(src), "--module", tf1.elmo, "--output-key", "sequence_len", "--output", str(tmp_path / "o")]
    assert embed.main(argv) == 2
    err = capsys.readouterr().err
    assert "'sequence_len'" in err and "int32" in err and "elmo: float32" in err


# --------------------------------------------------------------------------- export: migration to TF2


def test_export_writes_a_reusable_trainable_tf2_module(tf1, migrated):
    for name in ("nnlm", "elmo"):
        path = getattr(migrated, name)
        with open(os.path.join(path, "module.json")) as f:
            manifest = json.load(f)
        assert manifest["format"] == "tf2" and manifest["reusable"] is True
        source = manifest["source"]
        assert source["kind"] == "tf1_hub" and source["format"] == "tf1_hub"
        assert source["fingerprint"] == fingerprints.fingerprint_dir(getattr(tf1, name))
        assert source["tag_sets"] == [[], ["train"]] and source["training_graph"] == ["train"]
        checked = source["verification"]["max_abs_diff"]
        assert max(checked.values()) <= 1e-5
        if name == "nnlm":  # no dropout: its train graph is compared too
            assert (
                sorted(checked) == ["default", "train/default"] and source["verification"]["train_not_compared"] == {}
            )
        else:  # dropout: the train graph's signatures give random outputs
            assert sorted(checked) == ["default", "tokens"]
            not_compared = source["verification"]["train_not_compared"]
            assert sorted(not_compared) == ["default", "tokens"]
            assert all(any("dropout" in op for op in ops) for ops in not_compared.values())
        assert max(manifest["verification"]["max_abs_diff"].values()) <= 1e-5
        assert os.listdir(os.path.join(path, "assets")) == ["tokens.txt"]
        # Same signatures, inputs and output dicts as the TF1 module.
        assert description.describe(path).signatures == description.describe(getattr(tf1, name)).signatures
    # word_embeddings is not in the TF1 graph's trainable_variables: it stays frozen, as hub.Module trained it.
    elmo = description.describe(migrated.elmo)
    assert (elmo.trainable, elmo.num_variables, elmo.num_trainable_variables) == (True, 6, 5)
    # The partitioned embedding table stays in its two parts, each valued from its slice of the checkpoint.
    assert description.describe(migrated.nnlm).num_trainable_variables == 2


def test_migrated_module_reproduces_the_tf1_module_and_trains_through_the_train_graph(tf1, migrated):
    import tensorflow_hub as hub

    nnlm = loading.load(migrated.nnlm)
    texts = ["zebra crossing the road", "The cat.", ""]  # OOV buckets, punctuation, an empty row
    np.testing.assert_allclose(
        nnlm.signatures["default"](default=tf.constant(texts))["default"], th.nnlm_reference(texts), atol=1e-5
    )
    elmo = loading.load(migrated.elmo)
    for text in ELMO_TEXTS.values():
        for signature in ("default", "tokens"):
            got, want = _elmo_row(elmo, signature, text), th.elmo_reference(text.split())
            np.testing.assert_allclose(got["elmo"], want["elmo"], atol=1e-5)
    sentences = tf.constant(list(ELMO_TEXTS.values()))
    inference = elmo(sentences, training=False).numpy()
    np.testing.assert_allclose(inference, elmo.signatures["default"](default=sentences)["default"], atol=1e-6)
    assert np.abs(elmo(sentences, training=True).numpy() - inference).max() > 1e-3  # dropout of the train graph
    np.testing.assert_allclose(nnlm(tf.constant(texts), training=True), nnlm(tf.constant(texts)), atol=1e-6)
    layer = hub.KerasLayer(migrated.elmo, trainable=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(sentences, training=True) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 5 and all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_embed_with_the_migrated_module(migrated, tmp_path):
    rows = _embed(tmp_path, migrated.elmo, ELMO_TEXTS, "--signature", "default", "--output-key", "elmo")
    for row_id, text in ELMO_TEXTS.items():
        np.testing.assert_allclose(rows[row_id], th.elmo_reference(text.split())["elmo"], atol=1e-5)


def test_one_set_of_variables_serves_both_graphs(tf1):
    module = tf1_migrate.migrate(tf1.elmo)
    scaling = next(v for v in module.trainable_variables if v.name.startswith("elmo/aggregation/scaling"))
    inputs = {"default": tf.constant(["a cat sat"])}
    before = [module.call("default", inputs, training)["elmo"].numpy() for training in (False, True)]
    assert all(np.abs(b).max() > 0 for b in before)
    scaling.assign(0.0)
    for training in (False, True):
        assert np.abs(module.call("default", inputs, training)["elmo"].numpy()).max() == 0.0


def test_a_migration_that_differs_from_the_tf1_module_is_not_published(tf1, tmp_path):
    module = tf1_migrate.migrate(tf1.nnlm)
    part = module.trainable_variables[0]
    part.assign(part + 0.01)  # no longer what the TF1 module computes
    with pytest.raises(export.ExportVerificationError, match=r"does not reproduce the TF1 module .*default: 0\.0"):
        export.export_module(module, str(tmp_path / "root"), "drifted")
    assert export.list_versions(str(tmp_path / "root"), "drifted") == []


# --------------------------------------------------------------------------- what is refused


def _tiny_fn(kind: str) -> list[th.Signature]:
    text = tf.compat.v1.placeholder(tf.string, [None], name="text")
    weight = tf.compat.v1.get_variable(
        "weight", [1, 2], initializer=tf.compat.v1.zeros_initializer(), use_resource=kind != "ref variable op"
    )
    out = tf.gather(weight, tf.zeros_like(tf.strings.length(text)))
    if kind == "ref variable op":  # a signature that updates a TF1 reference variable in place
        out = out + tf.compat.v1.assign_add(weight, tf.ones_like(weight))
    if kind == "update_ops":
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, tf.compat.v1.assign_add(weight, weight))
    if kind == "unknown collection":
        tf.compat.v1.add_to_collection("my_stuff", out)
    if kind == "while loop":  # TF1 control flow (Enter/Exit/NextIteration), as dynamic_rnn built it
        out = tf.compat.v1.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, tf.tanh(h)), [0, out])[1]
    return [th.Signature("default", {"default": text}, {"default": out})]


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "ref variable op",
            "MetaGraph {} of '{path}': TF1 reference variable 'weight' is used by op 'AssignAdd' "
            "(AssignAdd), which needs the reference itself",
        ),
        ("update_ops", "MetaGraph {} of '{path}': collection 'update_ops' holds 1 entries: ops TF1 training ran"),
        (
            "unknown collection",
            "MetaGraph {} of '{path}': unsupported collection 'my_stuff' (1 entries); collections a "
            "TF1 Hub module may have: asset_filepaths, cond_context",
        ),
        ("while loop", "MetaGraph {} of '{path}': collection 'while_context' holds 1 entries: TF1 control flow"),
    ],
)
def test_export_refuses_what_cannot_migrate_naming_the_part(tmp_path, capsys, kind, message):
    tf.compat.v1.disable_control_flow_v2()  # what TF1 built; restored below (a process-wide switch)
    try:
        path = th.export_hub_module(
            str(tmp_path / "m"), lambda: _tiny_fn(kind), [(set(), {})], {"weight": np.ones((1, 2), np.float32)}
        )
    finally:
        tf.compat.v1.enable_control_flow_v2()
    assert export_cli.main(["--source", path, "--root", str(tmp_path / "root"), "--name", "m"]) == 2
    err = capsys.readouterr().err
    assert f"error: TF1 Hub module '{path}' cannot be migrated: " + message.replace("{path}", path) in err
    assert not os.path.exists(tmp_path / "root" / "m" / "1")


def test_reference_variables_are_rewritten_as_resource_variables(tmp_path):
    path = th.build_nnlm_like(str(tmp_path / "nnlm-ref"), use_resource=False)
    graph = _saved_model(path).meta_graphs[0].graph_def
    assert {n.op for n in graph.node if n.name.startswith("embeddings/part_")} >= {"VariableV2"}
    module = tf1_migrate.migrate(path)
    assert [(v.name, v.trainable) for v in module.variables] == [
        ("embeddings/part_0:0", True),
        ("embeddings/part_1:0", True),
    ]
    out = module.call("default", {"default": tf.constant(NNLM_TEXTS)}, training=True)["default"]
    np.testing.assert_allclose(out.numpy(), th.nnlm_reference(NNLM_TEXTS), atol=1e-5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(module.call("default", {"default": tf.constant(NNLM_TEXTS)})["default"] ** 2)
    assert all(g is not None for g in tape.gradient(loss, module.trainable_variables))
    result = export.export_module(path, str(tmp_path / "root"), "nnlm-ref")
    assert result.manifest["num_trainable_variables"] == 2
    reloaded = loading.load(result.path).signatures["default"](default=tf.constant(NNLM_TEXTS))["default"]
    np.testing.assert_allclose(reloaded.numpy(), th.nnlm_reference(NNLM_TEXTS), atol=1e-5)


def test_export_refuses_a_module_without_the_inference_graph(tf1, tmp_path):
    path = str(tmp_path / "train-only")
    shutil.copytree(tf1.nnlm, path)
    proto = _saved_model(path)
    del proto.meta_graphs[0]
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(proto.SerializeToString())
    with pytest.raises(export.ExportError, match=r"has no MetaGraph for the empty tag set \{\}; tag sets: \{'train'\}"):
        export.export_module(path, str(tmp_path / "root"), "m")


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_a_tf1_module_saves_trained_weights(tf1, migrated, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(finetune_data.jsonl_text(*finetune_data.small_text_rows(("a", "b", "c"))))
    root = tmp_path / "tuned"
    argv = [
        "--module",
        tf1.elmo,
        "--data",
        str(data),
        "--output-root",
        str(root),
        "--name",
        "elmo-tuned",
        "--steps",
        "3",
        "--learning-rate",
        "0.05",
    ]
    assert finetune_cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["parent"]["fingerprint"] == fingerprints.fingerprint_dir(tf1.elmo)
    assert summary["metrics"]["training"]["module_training_mode"] is True  # the train graph's dropout is seeded
    with open(os.path.join(summary["path"], "module.json")) as f:
        manifest = json.load(f)
    assert manifest["extra"]["tf1_migration"]["format"] == "tf1_hub"
    tuned = loading.load(summary["path"])
    trained = {v.name.split(":")[0]: v.numpy() for v in tuned.variables}
    original = th.elmo_values()
    assert set(trained) == set(original)
    changed = {name for name in original if not np.allclose(trained[name], original[name])}
    assert changed == set(original) - {"elmo/word_embeddings"}  # the frozen variable stayed as it was
    # The release DAG's validate step accepts it against its TF1 parent (same signatures, finite outputs).
    report = release.validate(summary["path"])
    assert report["parent"] == {"handle": tf1.elmo, "fingerprint": fingerprints.fingerprint_dir(tf1.elmo)}
    # The migration itself (a TF2 module) fine-tunes the same way.
    argv = [
        "--module",
        migrated.nnlm,
        "--data",
        str(data),
        "--output-root",
        str(root),
        "--name",
        "nnlm-tuned",
        "--steps",
        "2",
        "--learning-rate",
        "0.05",
    ]
    assert finetune_cli.main(argv) == 0
    path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"]
    parts = sorted((v.name, v.numpy()) for v in loading.load(path).variables)  # embeddings/part_0, /part_1
    assert [name for name, _ in parts] == ["embeddings/part_0:0", "embeddings/part_1:0"]
    assert not np.allclose(np.concatenate([value for _, value in parts]), th.nnlm_values()["embeddings"])


def test_finetune_a_tf1_module_needs_a_name(tf1, tmp_path, capsys):
    argv = ["--module", tf1.nnlm, "--data", str(tmp_path / "x.jsonl"), "--output-root", str(tmp_path)]
    assert finetune_cli.main(argv) == 2
    assert "has no name in a module.json; pass a name" in capsys.readouterr().err
