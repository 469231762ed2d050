"""The op gate: modules that read, write or list files are refused before they run."""

from __future__ import annotations

import json
import os

import pytest

from pipelines import inspect as inspect_cli
from pipelines.hub import op_gate, op_scan
from pipelines.hub.op_verdict import OpGateError
from tests.fixtures import hostile_modules

BUNDLED = [
    "build/modules/all-minilm-l6-v2/1",
    "build/modules/all-minilm-l6-v2-bf16/1",
    "build/modules/efficientnet-lite0/1",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    marker = str(root / "written-by-the-module.txt")
    return {
        "marker": marker,
        "tf2": hostile_modules.build_file_ops_module(str(root / "tf2"), marker),
        "tf1": hostile_modules.build_tf1_file_op_module(str(root / "tf1"), marker),
        "saver": hostile_modules.build_checkpoint_writer_module(str(root / "saver"), str(root / "ckpt")),
    }


@pytest.mark.parametrize("path", BUNDLED)
def test_the_bundled_modules_pass(path):
    assert op_scan.scan(os.path.join(REPO, path)) == ()


def test_the_tiny_test_modules_pass(tiny):
    for path in (tiny.text, tiny.tf1, tiny.image, tiny.image_open, tiny.plain):
        assert op_scan.scan(path) == (), path


def test_file_reads_writes_and_listing_are_refused_naming_op_and_function(hostile):
    refused = op_scan.scan(hostile["tf2"])
    assert {r.op for r in refused} == {"ReadFile", "WriteFile", "MatchingFiles"}
    assert all(r.where.startswith("__inference_serve") for r in refused)
    with pytest.raises(OpGateError) as e:
        op_gate.check(hostile["tf2"])
    message = str(e.value)
    for op in ("ReadFile", "WriteFile", "MatchingFiles"):
        assert f"{op} (" in message
    assert "__inference_serve" in message and "--allow-ops MatchingFiles,ReadFile,WriteFile" in message
    assert not os.path.exists(hostile["marker"])  # scanning runs nothing


def test_allow_ops_and_trust_open_the_gate_deliberately(hostile):
    with pytest.raises(OpGateError, match="MatchingFiles"):
        op_gate.check(hostile["tf2"], allow_ops=["ReadFile", "WriteFile"])
    verdict = op_gate.check(hostile["tf2"], allow_ops=["ReadFile", "WriteFile", "MatchingFiles"])
    assert verdict.passed and verdict.as_manifest()["allowed_ops"] == ["MatchingFiles", "ReadFile", "WriteFile"]
    trusted = op_gate.check(hostile["tf2"], trust=True)
    assert trusted.passed and trusted.as_manifest()["trusted"] is True
    assert "trusted" in trusted.summary()


def test_a_tf1_module_with_a_file_op_is_refused(hostile):
    refused = op_scan.scan(hostile["tf1"])
    assert [(r.op, r.where) for r in refused] == [("WriteFile", "<graph> (no tags)")]


def test_checkpoint_ops_pass_only_in_the_modules_own_saver(hostile):
    refused = op_scan.scan(hostile["saver"])
    assert [r.op for r in refused] == ["SaveV2"]
    assert "outside the module's saver" in refused[0].reason and refused[0].where.startswith("__inference_serve")


def test_the_verdict_is_cached_by_fingerprint(hostile, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = op_gate.check(hostile["tf2"], trust=True, fingerprint="f" * 64, cache_dir=cache)
    monkeypatch.setattr(op_scan, "scan", lambda *a, **k: pytest.fail("scanned again"))
    again = op_gate.check(hostile["tf2"], trust=True, fingerprint="f" * 64, cache_dir=cache)
    assert again.refused == first.refused
    with pytest.raises(OpGateError):
        op_gate.check(hostile["tf2"], fingerprint="f" * 64, cache_dir=cache)


def test_an_unreadable_graph_is_a_clear_error(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\xff not a proto")
    with pytest.raises(OpGateError, match="cannot read the graphs"):
        op_scan.scan(str(tmp_path))


def test_inspect_shows_the_verdict_and_refuses_before_loading(hostile, capsys):
    assert inspect_cli.main([os.path.join(REPO, BUNDLED[0])]) == 0
    assert "op gate:      passed: every op is one a module may run" in capsys.readouterr().out
    assert inspect_cli.main([hostile["tf2"]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the module at ") and err.count("\n") == 1 and "WriteFile (writes files)" in err
    assert not os.path.exists(hostile["marker"])
    assert inspect_cli.main(["--json", "--allow-ops", "ReadFile,WriteFile,MatchingFiles", hostile["tf2"]]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["op_gate"]["allowed_ops"] == ["MatchingFiles", "ReadFile", "WriteFile"]
    assert described["signatures"]["default"]["outputs"][0]["name"] == "default"
