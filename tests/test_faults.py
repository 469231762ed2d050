"""Faults: a killed run, a dead worker, a full disk, an unwritable output — nothing lost, nothing duplicated.

Each test checks the same invariants: a run that does not complete leaves no
new `_SUCCESS` (and an old table stays as it was), and the same command run
again commits a table holding every input id exactly once.

What Beam does when a worker process dies (checked here, Beam 2.77): the
multi-process DirectRunner (FnApiRunner) does not retry the bundle on a new
worker — the run fails ("Channel closed prematurely"). `hub-embed` then exits
1 naming the cause, commits nothing, and re-running the same command is safe.
(Dataflow retries a failed bundle on another worker; the commit protocol in
pipelines/embedding/sinks.py only names parts that the committed attempt reported, but
no test here runs on Dataflow.)

Covered elsewhere: two processes resolving one remote module, one killed
mid-download — tests/test_handles.py::test_killed_download_leaves_nothing_and_does_not_block
and ::test_concurrent_resolve_from_several_processes.
"""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines.embedding import sinks
from tests.fixtures import reliability as rel
from tests.fixtures.reliability import run


def _hooks_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (rel.WORKER_HOOKS, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _spawn(argv: list[str], log, **env: str) -> subprocess.Popen:
    """`python -m pipelines.embed ARGV` in its own process group, with the test hooks loaded."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.embed", *argv],
        cwd=rel.REPO,
        env=_hooks_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_once_parts_exist(proc: subprocess.Popen, output: str, log_path, timeout_s: float = 240) -> int:
    """Polls every 10 ms; SIGKILLs the run's process group once its temp dir holds a part.

    Asserts that `_SUCCESS` does not change while the run is alive. Returns the
    number of parts the run had written when it was killed.
    """
    success = os.path.join(output, "_SUCCESS")
    before = _read(success)
    deadline = time.monotonic() + timeout_s
    parts: list[str] = []
    while time.monotonic() < deadline:
        assert _read(success) == before, "_SUCCESS changed before the run completed"
        parts = glob.glob(os.path.join(output, ".tmp-*", "part-*.parquet"))
        if parts:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before writing a part:\n{open(log_path).read()[-3000:]}"
            )
        time.sleep(0.01)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("no part was written in time")
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert _read(success) == before, "the killed run changed _SUCCESS"
    return len(parts)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _assert_exact(result: rel.Run, ids: set[str]) -> None:
    assert result.rc == 0, result.err
    result.assert_balanced(rows_in=len(ids))
    assert set(result.rows()) == ids
    manifest = result.manifest
    named = {f["path"] for f in manifest["files"] + manifest["error_files"]}
    left = {os.path.relpath(os.path.join(d, n), result.output) for d, _, names in os.walk(result.output) for n in names}
    # The job writes the table's report after its commit, unless it says why it could not.
    report = set() if "report was not written" in result.err else {"_report.html"}
    table_files = named | {"_SUCCESS"} | report
    assert left == table_files, f"debris left beside the table: {sorted(left - table_files)[:5]}"


@pytest.mark.slow
def test_a_killed_run_and_a_killed_overwrite_then_the_same_command_again(tiny, tmp_path):
    n = 20_000  # 40 parts of 500 rows: the kills land with parts written and most still to come
    src = rel.write_lines(tmp_path / "corpus.txt", rel.short_texts(n))
    ids = {f"{src}:{i}" for i in range(1, n + 1)}
    out = str(tmp_path / "out")
    argv = ["--input", src, "--module", tiny.text, "--output", out]  # run() adds the same --output
    log_path = tmp_path / "killed.log"

    # 1. A first run, SIGKILLed while it writes parts: no _SUCCESS ever appears.
    with open(log_path, "w") as log:
        written = _kill_once_parts_exist(_spawn(argv, log, HUB_EMBED_TEST_PART_ROWS="500"), out, log_path)
    assert written >= 1
    assert not os.path.exists(os.path.join(out, "_SUCCESS"))
    assert [e for e in os.listdir(out) if not e.startswith(".tmp-")] == [], (
        "a killed run left files in the table's place"
    )

    # The same command again: every id exactly once, the killed run's debris gone.
    first = run(out, *argv[:-2])
    first_run_id = first.manifest["run_id"]
    _assert_exact(first, ids)
    table = sinks.read_table(out)

    # 2. A nightly --overwrite run, SIGKILLed mid-way: the committed table stays whole and unchanged.
    with open(log_path, "w") as log:
        _kill_once_parts_exist(_spawn(argv + ["--overwrite"], log, HUB_EMBED_TEST_PART_ROWS="500"), out, log_path)
    assert sinks.read_table_manifest(out)["run_id"] == first_run_id
    assert sinks.read_table(out).equals(table)
    assert any(e.startswith(".tmp-") for e in os.listdir(out)), "the killed overwrite run should have left its temp dir"

    # The same --overwrite command again: a new table, exact, with no debris of either killed run.
    second = run(out, *argv[:-2], "--overwrite")
    _assert_exact(second, ids)
    assert second.manifest["run_id"] != first_run_id


@pytest.mark.slow
def test_a_killed_incremental_run_reusing_its_own_output_then_the_same_command_again(tiny, tmp_path):
    """The nightly pattern `--reuse OUT --output OUT --overwrite`, SIGKILLed mid-way: the old table stays whole,
    and the same command again reuses it exactly (bit-identical vectors, every id once, no debris)."""
    n = 20_000
    texts = rel.short_texts(n, seed=1)
    src = rel.write_lines(tmp_path / "corpus.txt", texts)
    ids = {f"{src}:{i}" for i in range(1, n + 1)}
    out = str(tmp_path / "out")
    first = run(out, "--input", src, "--module", tiny.text)
    _assert_exact(first, ids)
    first_run_id = first.manifest["run_id"]
    table = sinks.read_table(out)
    old = {row["id"]: row for row in table.to_pylist()}

    edited = [text + " (revised)" if i % 100 == 0 else text for i, text in enumerate(texts)]  # 1% changed, in place
    rel.write_lines(src, edited)
    argv = ["--input", src, "--module", tiny.text, "--reuse", out, "--overwrite", "--output", out]
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        _kill_once_parts_exist(_spawn(argv, log, HUB_EMBED_TEST_PART_ROWS="500"), out, log_path)
    assert sinks.read_table_manifest(out)["run_id"] == first_run_id
    assert sinks.read_table(out).equals(table), "the killed run changed the table it was reusing"

    again = run(out, *argv[:-2])
    _assert_exact(again, ids)
    known = {row["content_hash"] for row in old.values()}
    reused = [i for i, text in enumerate(edited) if hashlib.sha256(text.encode()).hexdigest() in known]
    assert again.counts["rows_reused"] == len(reused) and again.counts["rows_embedded"] == n - len(reused)
    assert again.manifest["reuse"]["run_id"] == first_run_id
    new = again.rows()
    for i in reused:
        key = f"{src}:{i + 1}"
        assert (
            np.asarray(new[key]["embedding"], np.float32).tobytes()
            == np.asarray(old[key]["embedding"], np.float32).tobytes()
        )


@pytest.mark.slow
def test_a_worker_process_dying_inside_a_bundle_fails_the_run_and_a_rerun_is_exact(tiny, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "crashed"
    for key, value in _hooks_env(HUB_EMBED_TEST_CRASH_ONCE=str(marker), HUB_EMBED_TEST_CRASH_TEXT="CRASH-HERE").items():
        monkeypatch.setenv(key, value)  # the worker processes inherit the environment (and load the hooks)
    texts = rel.short_texts(2_000)
    texts[1234] += " CRASH-HERE"
    src = rel.write_lines(tmp_path / "corpus.txt", texts)
    ids = {f"{src}:{i}" for i in range(1, len(texts) + 1)}
    out = tmp_path / "out"
    argv = (
        "--input",
        src,
        "--module",
        tiny.text,
        "--batch-size",
        "16",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    )

    crashed = run(out, *argv, capsys=capsys)
    assert marker.exists(), "no worker reached the crash point"
    assert crashed.rc == 1
    assert "hub-embed: run failed, nothing committed" in crashed.err
    assert "a Beam worker process died" in crashed.err
    assert sinks.read_table_manifest(str(out)) is None

    rerun = run(out, *argv, capsys=capsys)
    _assert_exact(rerun, ids)
    assert f"{src}:1235" in rerun.rows()


# --------------------------------------------------------------------------- disk full, unwritable output


needs_mount = pytest.mark.skipif(not rel.can_mount(), reason="needs root with mount rights (tmpfs)")


@needs_mount
def test_disk_full_fails_the_run_keeps_the_old_table_and_a_rerun_with_space_commits(tiny, tmp_path, capsys):
    small = rel.write_lines(tmp_path / "small.txt", rel.short_texts(20))
    big_texts = rel.short_texts(20_000, seed=1)
    big = rel.write_lines(tmp_path / "big.txt", big_texts)
    with rel.tmpfs(tmp_path / "disk", "256k") as disk:
        out = os.path.join(disk, "out")
        old = run(out, "--input", small, "--module", tiny.text, capsys=capsys)
        _assert_exact(old, {f"{small}:{i}" for i in range(1, 21)})
        old_table, old_manifest = sinks.read_table(out), _read(os.path.join(out, "_SUCCESS"))

        argv = ("--input", big, "--module", tiny.text, "--overwrite")
        full = run(out, *argv, capsys=capsys)
        assert full.rc == 1
        assert "hub-embed: run failed, nothing committed" in full.err and "No space left on device" in full.err
        assert _read(os.path.join(out, "_SUCCESS")) == old_manifest
        assert sinks.read_table(out).equals(old_table)

        # Read-only now: refused before anything runs, the old table untouched.
        rel.remount(disk, "ro")
        refused = run(out, *argv, capsys=capsys)
        assert refused.rc == 2 and "cannot be written" in refused.err
        assert sinks.read_table(out).equals(old_table)

        # Space again: the same command commits the whole table, and the failed run's debris is gone.
        rel.remount(disk, "rw,size=32m")
        _assert_exact(run(out, *argv, capsys=capsys), {f"{big}:{i}" for i in range(1, len(big_texts) + 1)})


def test_file_size_limit_stands_in_for_a_full_disk(tiny, tmp_path):
    """A second kind of full disk, needing no mount rights: RLIMIT_FSIZE makes writes past 64 KiB fail (EFBIG)."""
    import resource

    src = rel.write_lines(tmp_path / "big.txt", rel.short_texts(20_000, seed=1))
    out = str(tmp_path / "out")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    done = subprocess.run(
        [sys.executable, "-m", "pipelines.embed", "--input", src, "--output", out, "--module", tiny.text],
        cwd=rel.REPO,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "hub-embed: run failed, nothing committed" in done.stderr and "File too large" in done.stderr
    assert not os.path.exists(os.path.join(out, "_SUCCESS"))
    _assert_exact(run(out, "--input", src, "--module", tiny.text), {f"{src}:{i}" for i in range(1, 20_001)})


def test_unwritable_output_directory_is_refused_before_running(tiny, tmp_path, capsys):
    src = rel.write_lines(tmp_path / "in.txt", ["hello"])
    locked = tmp_path / "locked"
    if os.geteuid() != 0:
        locked.mkdir(mode=0o555)
        mounted = None
    elif rel.can_mount():
        mounted = rel.tmpfs(locked, "64k", read_only=True)
        mounted.__enter__()
    else:
        pytest.skip("root without mount rights: every directory is writable")
    try:
        result = run(locked / "out", "--input", src, "--module", tiny.text, capsys=capsys)
        assert result.rc == 2
        assert f"output '{locked / 'out'}' cannot be written: '{locked}' is not writable" in result.err
        assert not (locked / "out").exists()
    finally:
        if mounted is not None:
            mounted.__exit__(None, None, None)
