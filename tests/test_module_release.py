"""pipelines.finetune.release: validation against the parent, publishing, the fine-tune command."""

from __future__ import annotations

import json
import os
import sys

import pytest

from pipelines.finetune import release
from pipelines.hub import fingerprints, registry
from tests.fixtures import release as release_inputs


@pytest.fixture
def root(parent_root, tmp_path):
    return release_inputs.copy_root(parent_root, tmp_path / "modules")


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    return release_inputs.write_labeled(str(tmp_path_factory.mktemp("data") / "data.jsonl"))


def parent_of(root: str) -> str:
    return os.path.join(root, "tiny", "1")


def child(root: str, *, scale: float = 1.0, seed: int = 0) -> str:
    from tests.fixtures import tiny_modules as tm

    module = tm.ElmoLikeModule(8, seed)
    module.scale.assign(scale)
    return release_inputs.export_child(module, root, parent_of(root))


def test_validate_accepts_an_equivalent_version(root, labeled):
    path = child(root)
    report = release.validate(path, probe_data=labeled)  # parent taken from module.json
    assert (report["name"], report["version"]) == ("tiny", 2)
    assert report["parent"]["fingerprint"] == fingerprints.fingerprint_dir(parent_of(root))
    assert report["metric"]["new"] == pytest.approx(report["metric"]["parent"])


def test_validate_rejects_non_finite_outputs(root):
    with pytest.raises(release.ValidationError, match="NaN/Inf"):
        release.validate(child(root, scale=float("nan")))


def test_validate_rejects_a_worse_probe_metric(root, labeled):
    path = child(root, scale=0.0)  # every embedding is zero: the probe guesses
    with pytest.raises(release.ValidationError, match="Probe accuracy dropped"):
        release.validate(path, probe_data=labeled, tolerance=0.02)
    release.validate(path, probe_data=labeled, tolerance=1.0)  # within a loose tolerance


def test_validate_rejects_changed_files_and_other_dims(root, tmp_path):
    from pipelines import export
    from tests.fixtures import tiny_modules as tm

    narrow = tm.build_text_module(str(tmp_path / "narrow"), dim=4)
    path = export.export_module(narrow, root, "tiny", parent=export.module_ref(parent_of(root))).path
    with pytest.raises(release.ValidationError, match="output 'default' changed"):
        release.validate(path)
    with open(os.path.join(path, "extra.txt"), "w") as f:
        f.write("tampered")
    with pytest.raises(release.ValidationError, match="files changed since export"):
        release.validate(path)


def test_reject_moves_the_version_aside(root):
    path = child(root)
    moved = release.reject(path)
    assert not os.path.exists(path) and os.path.isdir(moved)
    assert os.path.basename(moved).startswith(".rejected-2-")
    from pipelines import export

    assert export.list_versions(root, "tiny") == [1]


def test_publish_moves_latest_forward_only(root):
    first = release.publish(parent_of(root))
    assert first["version"] == 1 and os.readlink(os.path.join(root, "tiny", "latest")) == "1"
    second = release.publish(child(root))
    assert second == {
        "name": "tiny",
        "version": 2,
        "fingerprint": fingerprints.fingerprint_dir(os.path.join(root, "tiny", "2")),
        "handle": os.path.join(root, "tiny", "2"),
    }
    assert release.published_version(root, "tiny") == 2
    assert registry.resolve(os.path.join(root, "tiny", "latest")).fingerprint == second["fingerprint"]
    assert release.publish(os.path.join(root, "tiny", "2")) == second  # a retry is a no-op
    with pytest.raises(release.PublishError, match="already published"):
        release.publish(parent_of(root))
    assert release.published_version(root, "tiny") == 2


@pytest.mark.slow
def test_publish_uploads_the_archive_to_s3(root, s3_server):
    s3_server.client().create_bucket(Bucket="modules")
    extra = release.publish(parent_of(root), upload_root="s3://modules/hub")
    assert extra["handle"] == "s3://modules/hub/tiny/1.tar.gz"
    assert registry.resolve(extra["handle"]).fingerprint == extra["fingerprint"]


def test_run_finetune_returns_the_printed_version_path(root, tmp_path):
    version = parent_of(root)
    summary = json.dumps({"path": version, "version": 1})
    assert release.run_finetune([sys.executable, "-c", f"print('training...'); print({summary!r})"]) == version
    with pytest.raises(release.ReleaseError, match="exit 3"):
        release.run_finetune([sys.executable, "-c", "import sys; print('bad data'); sys.exit(3)"])
    with pytest.raises(release.ReleaseError, match="no exported version"):
        release.run_finetune([sys.executable, "-c", "print('done')"])


def test_finetune_command():
    cmd = release.finetune_command("m", "d.jsonl", "/root", name="x", steps=5, seed=None, python="py")
    assert cmd == [
        "py",
        "-m",
        "pipelines.finetune",
        "--module",
        "m",
        "--data",
        "d.jsonl",
        "--task",
        "classification",
        "--output-root",
        "/root",
        "--name",
        "x",
        "--steps",
        "5",
    ]
