"""The op gate in the commands: `embed`, `export` and `finetune` refuse a module that reads, writes or lists files.

Real hostile modules (tests/fixtures/hostile_modules.py), real command lines,
and a marker file that exists only if the module ever ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelines.embedding import config, pipeline, sinks
from pipelines.export import cli as export_cli
from pipelines.finetune import cli as finetune_cli
from pipelines.hub import op_scan
from pipelines.hub.module_manifest import read_module_manifest
from tests.fixtures import hostile_modules
from tests.fixtures import reliability as rel

FILE_OPS = ["MatchingFiles", "ReadFile", "WriteFile"]


@pytest.fixture
def hostile(tmp_path_factory):
    """Fresh hostile modules per test: a marker written by a module that ran must not leak into the next test."""
    root = tmp_path_factory.mktemp("hostile")
    marker = str(root / "markers" / "written-by-the-module.txt")
    os.makedirs(os.path.dirname(marker))
    return {
        "marker": marker,
        "tf2": hostile_modules.build_file_ops_module(str(root / "tf2"), marker),
        "tf1": hostile_modules.build_tf1_file_op_module(str(root / "tf1"), marker),
    }


@pytest.fixture
def corpus(tmp_path):
    return rel.write_lines(tmp_path / "corpus.txt", ["one sentence", "another sentence", "a third"])


def _embed(capsys, corpus, output, *args: str) -> tuple[int, str]:
    rc = rel.run(output, "--input", corpus, *args, capsys=capsys)
    return rc.rc, rc.err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hub-embed:")]


def test_embed_refuses_a_module_that_reads_writes_and_lists_files(hostile, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = _embed(capsys, corpus, out, "--module", hostile["tf2"])
    assert rc == 2, err
    (line,) = _errors(err)
    for op in FILE_OPS:
        assert f"{op} (" in line and "__inference_serve" in line
    assert "--allow-ops MatchingFiles,ReadFile,WriteFile" in line and "Traceback" not in err
    assert not os.path.exists(hostile["marker"]), "the module ran"
    assert not out.exists(), "the run started"


def test_embed_runs_it_with_the_ops_allowed_and_the_manifest_says_so(hostile, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = _embed(capsys, corpus, out, "--module", hostile["tf2"], "--allow-ops", "ReadFile,WriteFile,MatchingFiles")
    assert rc == 0, err
    assert sinks.read_table_manifest(str(out))["op_gate"] == {
        "passed": True,
        "trusted": False,
        "allowed_ops": FILE_OPS,
        "refused_ops": FILE_OPS,
    }
    assert os.path.exists(hostile["marker"])  # it ran, as allowed

    partly = tmp_path / "partly"
    rc, err = _embed(capsys, corpus, partly, "--module", hostile["tf2"], "--allow-ops", "ReadFile,WriteFile")
    assert rc == 2 and "MatchingFiles (" in _errors(err)[0] and "WriteFile (" not in _errors(err)[0]


def test_embed_trusts_a_module_from_its_config_file(hostile, corpus, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"module: {hostile['tf2']}\ntrust_module: true\n")
    rc, err = _embed(capsys, corpus, tmp_path / "out", "--config", str(job))
    assert rc == 0, err
    gate = sinks.read_table_manifest(str(tmp_path / "out"))["op_gate"]
    assert gate == {"passed": True, "trusted": True, "allowed_ops": [], "refused_ops": FILE_OPS}
    job.write_text(f"module: {hostile['tf2']}\nallow_ops: [ReadFile, WriteFile, MatchingFiles]\n")
    rc, err = _embed(capsys, corpus, tmp_path / "again", "--config", str(job))
    assert rc == 0 and sinks.read_table_manifest(str(tmp_path / "again"))["op_gate"]["allowed_ops"] == FILE_OPS


def test_embed_refuses_a_tf1_module_with_a_file_op(hostile, corpus, tmp_path, capsys):
    rc, err = _embed(capsys, corpus, tmp_path / "out", "--module", hostile["tf1"])
    assert rc == 2, err
    (line,) = _errors(err)
    assert "WriteFile (writes files) in <graph> (no tags)" in line
    assert not os.path.exists(hostile["marker"]) and not (tmp_path / "out").exists()


def test_the_command_line_exits_2_in_one_line(hostile, corpus, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.embed", "--input", corpus, "--output", str(tmp_path / "out")]
        + ["--module", hostile["tf2"]],
        cwd=rel.REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(_errors(done.stderr)) == 1 and "WriteFile (" in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(hostile["marker"])


def test_a_bad_op_name_is_a_config_error():
    with pytest.raises(config.ConfigError, match=r"allow_ops: 'Read File' is not a TensorFlow op name"):
        config.load(["--output", "/tmp/x", "--input", __file__, "--input-format", "txt", "--allow-ops", "Read File"])


def test_the_verdict_is_cached_under_the_fingerprint_so_a_second_launch_does_not_scan(
    hostile, corpus, tmp_path, module_cache, monkeypatch
):
    args = ["--input", corpus, "--output", str(tmp_path / "out"), "--module", hostile["tf2"], "--trust-module"]
    job = pipeline.prepare(config.load(args))
    assert os.path.isfile(os.path.join(module_cache, "op-gate", f"{job.module.fingerprint}.json"))
    monkeypatch.setattr(op_scan, "scan", lambda *a, **k: pytest.fail("scanned again"))
    assert pipeline.prepare(config.load(args)).op_gate == job.op_gate


@pytest.mark.parametrize("path", ["build/modules/all-minilm-l6-v2/1", "build/modules/efficientnet-lite0/1"])
def test_the_bundled_modules_pass_the_gate_at_launch(path, tmp_path):
    cfg = config.load(["--input", __file__, "--input-format", "txt", "--output", str(tmp_path / "o"), "--module", path])
    verdict = pipeline.gate(cfg, os.path.join(rel.REPO, path), "sha256:" + "0" * 64)
    assert verdict == {"passed": True, "trusted": False, "allowed_ops": [], "refused_ops": []}


# --------------------------------------------------------------------------- export and finetune


def test_export_refuses_a_source_with_file_ops_before_loading_it(hostile, tmp_path, capsys):
    root = tmp_path / "modules"
    for source in (hostile["tf2"], hostile["tf1"]):
        assert export_cli.main(["--source", source, "--root", str(root), "--name", "m"]) == 2
        err = capsys.readouterr().err
        assert "WriteFile (writes files)" in err and "--allow-ops" in err
    assert not os.path.exists(hostile["marker"]) and not (root / "m" / "1").exists()


def test_export_with_the_ops_allowed_records_the_written_modules_verdict(hostile, tmp_path, capsys):
    root = tmp_path / "modules"
    argv = ["--source", hostile["tf2"], "--root", str(root), "--name", "m", "--allow-ops", ",".join(FILE_OPS)]
    assert export_cli.main(argv) == 0, capsys.readouterr().err
    path = capsys.readouterr().out.split()[0]
    assert read_module_manifest(path)["op_gate"] == {
        "passed": True,
        "trusted": False,
        "allowed_ops": FILE_OPS,
        "refused_ops": FILE_OPS,
    }


def test_export_refuses_to_write_an_in_memory_module_with_file_ops(hostile, tmp_path):
    from pipelines import export

    module = hostile_modules.FileOpsModule(hostile["marker"])
    with pytest.raises(export.ExportError, match=r"WriteFile \(writes files\) in __inference_serve"):
        export.export_module(module, str(tmp_path / "modules"), "m", signatures={"default": module.serve})
    assert not os.path.exists(hostile["marker"]) and not (tmp_path / "modules" / "m" / "1").exists()


def test_finetune_refuses_a_parent_with_file_ops_before_training(hostile, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(8)))
    argv = ["--module", hostile["tf2"], "--data", str(data), "--output-root", str(tmp_path / "out"), "--name", "m"]
    assert finetune_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the module at") and all(f"{op} (" in err for op in FILE_OPS)
    assert not os.path.exists(hostile["marker"]) and not (tmp_path / "out").exists()
