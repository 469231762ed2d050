"""One writer per table: runs into one output commit by compare-and-swap, and clean up only what is provably dead.

Real `python -m pipelines.embed` processes, held at their commits by a
start-up hook (tests/fixtures/commit_hooks) so that they overlap as each test
decides; real pipelines into the local S3 and GCS servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pipelines.embedding import commit, manifest_store, output_locks, sinks
from pipelines.embedding.config import COMMIT_LOCK, SinkConfig
from pipelines.hub import locks
from tests import test_sinks
from tests.fixtures import reliability as rel

COMMIT_HOOKS = os.path.join(rel.REPO, "tests", "fixtures", "commit_hooks")
ROWS = 120


def _spawn(name: str, tmp_path, argv: list[str]) -> tuple[subprocess.Popen, str, str]:
    """Starts `python -m pipelines.embed ARGV`, held at its commit until `<name>.go` exists."""
    ready, go = str(tmp_path / f"{name}.ready"), str(tmp_path / f"{name}.go")
    env = {
        **os.environ,
        # The checkout itself too: the hook imports the package before `-m` puts the working directory on the path.
        "PYTHONPATH": os.pathsep.join(p for p in (COMMIT_HOOKS, rel.REPO, os.environ.get("PYTHONPATH")) if p),
        "HUB_EMBED_TEST_COMMIT_READY": ready,
        "HUB_EMBED_TEST_COMMIT_GO": go,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.embed", *argv],
        cwd=rel.REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, ready, go


def _wait_ready(procs_and_files, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(os.path.exists(ready) for _, ready in procs_and_files):
        for proc, _ in procs_and_files:
            if proc.poll() is not None:
                pytest.fail(f"a run ended before its commit: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "the runs did not reach their commits"
        time.sleep(0.1)


def _finish(proc: subprocess.Popen, go: str) -> tuple[int, str]:
    open(go, "w").close()
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def _tmp_dirs(output: str) -> list[str]:
    return sorted(e for e in os.listdir(output) if e.startswith(".tmp-"))


@pytest.mark.slow
def test_two_runs_into_one_new_output_exactly_one_commits(tiny, tmp_path):
    src = rel.write_lines(tmp_path / "corpus.txt", rel.short_texts(ROWS))
    out = str(tmp_path / "out")
    argv = ["--input", src, "--module", tiny.text, "--output", out]
    first, first_ready, first_go = _spawn("first", tmp_path, argv)
    second, second_ready, second_go = _spawn("second", tmp_path, argv)
    try:
        _wait_ready([(first, first_ready), (second, second_ready)])
        # Both launched into an output without a table, wrote every part, and wait at their commits.
        assert sinks.read_table_manifest(out) is None and len(_tmp_dirs(out)) == 2

        rc, err = _finish(first, first_go)
        assert rc == 0, err[-3000:]
        winner = sinks.read_table_manifest(out)["run_id"]
        (left,) = _tmp_dirs(out)
        assert left != f".tmp-{winner}" and os.listdir(os.path.join(out, left)), (
            "the winner's clean-up removed a live run's temporary files"
        )

        rc, err = _finish(second, second_go)
        assert rc == 2, err[-3000:]
        lines = [line for line in err.splitlines() if line.startswith("hub-embed:")]
        assert lines == [f"hub-embed: error: another run committed {winner} to {out} while this one ran"], err
        assert "Traceback" not in err
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()

    manifest = sinks.read_table_manifest(out)
    assert manifest["run_id"] == winner and manifest["counts"]["rows_in"] == ROWS
    assert all(f["path"].endswith(f"-{winner}.parquet") for f in manifest["files"])
    assert sinks.read_table(out).num_rows == manifest["counts"]["rows_written"] == ROWS
    parts = sorted(f["path"] for f in manifest["files"])
    assert sorted(os.listdir(out)) == ["_SUCCESS", "_report.html", *parts], "the loser left files, or took the winner's"
    with open(os.path.join(out, "_report.html"), encoding="utf-8") as f:
        assert winner in f.read(), "the table's report is not the winner's"


def test_a_run_with_overwrite_loses_to_a_table_committed_after_its_launch(tmp_path):
    """The table seen at launch is the one replaced: not one another run committed since."""
    out = tmp_path / "out"
    test_sinks.write(out, test_sinks._records(3, "a"), [], 3, run_id="20260101T000000Z-aaaaaaaa")
    cfg_seen = commit.seen_table(SinkConfig(output=str(out), overwrite=True))
    test_sinks.write(out, test_sinks._records(2, "b"), [], 2, run_id="20260102T000000Z-bbbbbbbb", overwrite=True)
    with pytest.raises(Exception, match="another run committed 20260102T000000Z-bbbbbbbb to .* while this one ran"):
        _write_replacing(out, cfg_seen, run_id="20260103T000000Z-cccccccc")
    assert sinks.read_table_manifest(str(out))["run_id"] == "20260102T000000Z-bbbbbbbb"
    assert sorted(sinks.read_table(str(out)).column("id").to_pylist()) == ["b0", "b1"]
    assert not os.path.exists(out / ".tmp-20260103T000000Z-cccccccc")


def _write_replacing(output, replaces, run_id, records=None):
    """`test_sinks.write`, with the table the run may replace given (as if read at its launch)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.embedding import pipeline

    records = records if records is not None else test_sinks._records(4, "c")
    cfg = SinkConfig(output=str(output), max_error_fraction=1.0, overwrite=True)
    p = pipeline.new_pipeline(PipelineOptions([]))
    inputs = {
        "records": p | "Records" >> beam.Create(records),
        "failures": p | "Failures" >> beam.Create([]),
        "tallies": p | "Tallies" >> beam.Create([("rows_in", len(records)), ("rows_embedded", len(records))]),
    }
    _ = inputs | sinks.WriteEmbeddingTable(
        cfg, run_id, test_sinks._schema(), {"table": test_sinks.METADATA, "config": {}}, replaces=replaces
    )
    p.run().wait_until_finish()


# In a process of its own: marks a run live in OUTPUT, says so, and sleeps until killed.
HOLD_A_RUN = """
import sys, time
from pipelines.embedding import commit
from pipelines.embedding.config import SinkConfig
commit.mark_run(SinkConfig(output=sys.argv[1]), sys.argv[2])
print("marked", flush=True)
time.sleep(600)
"""


def test_a_commit_removes_the_files_of_dead_runs_only(tmp_path):
    out = tmp_path / "out"
    live_id, dead_id = "20260101T000000Z-11111111", "20260101T000000Z-22222222"
    holders = {
        run_id: subprocess.Popen(
            [sys.executable, "-c", HOLD_A_RUN, str(out), run_id], cwd=rel.REPO, stdout=subprocess.PIPE, text=True
        )
        for run_id in (live_id, dead_id)
    }
    try:
        for holder in holders.values():
            assert holder.stdout.readline().strip() == "marked"
        for run_id in (live_id, dead_id):
            (out / f".tmp-{run_id}" / "part-x.parquet").write_bytes(b"written so far")
        holders[dead_id].kill()
        holders[dead_id].wait()
        (out / ".tmp-20260101T000000Z-unmarked").mkdir()  # what a killed run of an older version left
        test_sinks.write(out, test_sinks._records(2), [], 2, run_id="20260102T000000Z-33333333")
        assert _tmp_dirs(str(out)) == [f".tmp-{live_id}"]
        assert (out / f".tmp-{live_id}" / "part-x.parquet").read_bytes() == b"written so far"
        assert output_locks.is_gone(str(out / f".tmp-{live_id}")) is False
    finally:
        for holder in holders.values():
            holder.kill()
            holder.wait()
    assert output_locks.is_gone(str(out / f".tmp-{live_id}")) is True


def test_a_planted_commit_lock_link_is_refused_and_its_target_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, out / COMMIT_LOCK)
    with pytest.raises(locks.UnsafeLockFile, match="symbolic link"), output_locks.commit_lock(str(out)):
        pass
    assert victim.read_text() == "precious"


def test_the_commit_lock_is_one_holder_at_a_time_and_leaves_no_file(tmp_path):
    out = str(tmp_path / "out")
    held = pytest.raises(locks.LockTimeout, match="held the commit lock")
    with output_locks.commit_lock(out), held, output_locks.commit_lock(out, timeout_s=0.2):
        pass
    assert os.listdir(out) == []


# --------------------------------------------------------------------------- gs:// and s3://


def _bucket(store: str, request, name: str) -> str:
    if store == "s3":
        request.getfixturevalue("s3_server").client().create_bucket(Bucket=name)
    else:
        request.getfixturevalue("gcs_server").client().create_bucket(name)
    return f"{store}://{name}"


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_object_stores_a_run_that_lost_its_output_removes_only_its_own_files(store, request):
    """The check against the table seen at launch, made before anything moves (both stores, both servers)."""
    out = _bucket(store, request, f"tables-lost-{store}") + "/out"
    test_sinks.write(out, test_sinks._records(3, "a"), [], 3, run_id="20260101T000000Z-aaaaaaaa")
    with pytest.raises(Exception, match="another run committed 20260101T000000Z-aaaaaaaa to .* while this one ran"):
        _write_replacing(out, None, run_id="20260102T000000Z-bbbbbbbb")
    assert sinks.read_table_manifest(out)["run_id"] == "20260101T000000Z-aaaaaaaa"
    assert sorted(sinks.read_table(out).column("id").to_pylist()) == ["a0", "a1", "a2"]
    from apache_beam.io.filesystems import FileSystems

    left = [m.path for m in FileSystems.match([out + "/**"])[0].metadata_list]
    assert not [p for p in left if "bbbbbbbb" in p], left


def test_s3_refuses_a_manifest_written_over_one_it_did_not_see(request):
    """moto honours If-None-Match and If-Match on PutObject, as S3 does."""
    out = _bucket("s3", request, "tables-cas") + "/out"
    unseen = manifest_store.read(out)
    assert unseen.manifest is None
    manifest_store.replace(out, b'{"run_id": "a"}', unseen, "unused")
    with pytest.raises(manifest_store.ManifestChanged):
        manifest_store.replace(out, b'{"run_id": "b"}', unseen, "unused")  # If-None-Match: * on an existing object
    seen = manifest_store.read(out)
    manifest_store.replace(out, b'{"run_id": "c"}', seen, "unused")
    with pytest.raises(manifest_store.ManifestChanged):
        manifest_store.replace(out, b'{"run_id": "d"}', seen, "unused")  # If-Match: an ETag since replaced
    assert manifest_store.read(out).run_id == "c"


def test_s3_a_run_that_lost_between_its_check_and_its_write_removes_what_it_moved(request, monkeypatch):
    """The conditional write, not the check before it, decides: a manifest that came in between wins."""
    out = _bucket("s3", request, "tables-race") + "/out"
    test_sinks.write(out, test_sinks._records(3, "a"), [], 3, run_id="20260101T000000Z-aaaaaaaa")
    real_read = manifest_store.read
    reads = []

    def read_as_before_the_winner(output: str) -> manifest_store.StoredManifest:
        reads.append(output)
        return manifest_store.StoredManifest(None) if len(reads) == 1 else real_read(output)

    monkeypatch.setattr(manifest_store, "read", read_as_before_the_winner)
    with pytest.raises(Exception, match="another run committed 20260101T000000Z-aaaaaaaa to .* while this one ran"):
        _write_replacing(out, None, run_id="20260102T000000Z-bbbbbbbb")
    monkeypatch.setattr(manifest_store, "read", real_read)
    assert sinks.read_table_manifest(out)["run_id"] == "20260101T000000Z-aaaaaaaa"
    from apache_beam.io.filesystems import FileSystems

    left = [m.path for m in FileSystems.match([out + "/**"])[0].metadata_list]
    assert not [p for p in left if "bbbbbbbb" in p], left


def test_gcs_writes_the_manifest_on_the_generation_it_read(request, monkeypatch):
    """gcp-storage-emulator ignores ifGenerationMatch (it would let a stale write through), so what is checked
    here is that every manifest write carries the generation its commit read (0: no manifest yet)."""
    from google.cloud.storage import Blob

    out = _bucket("gs", request, "tables-generation") + "/out"
    conditions = []
    upload = Blob.upload_from_string

    def recording_upload(self, data, *args, **kwargs):
        if self.name.endswith("/_SUCCESS"):
            conditions.append(kwargs.get("if_generation_match"))
        return upload(self, data, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_string", recording_upload)
    test_sinks.write(out, test_sinks._records(2), [], 2, run_id="20260101T000000Z-aaaaaaaa")
    generation = manifest_store.read(out).version
    test_sinks.write(out, test_sinks._records(1), [], 1, run_id="20260102T000000Z-bbbbbbbb", overwrite=True)
    assert conditions == [0, generation] and generation > 0
    assert sinks.read_table_manifest(out)["run_id"] == "20260102T000000Z-bbbbbbbb"
