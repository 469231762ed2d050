"""A publish killed at any point (SIGKILL, in a subprocess) leaves the collection as it was; a rerun completes it.

Build, merge in place and merge beside the collection, killed while staging, once the index is built,
before and after COMMIT. Real PostgreSQL with pgvector and real tables, as in `test_publish.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.publish import source
from tests.fixtures.postgres import Db
from tests.fixtures.publish_cases import REPO, changes, expected, publish

# --------------------------------------------------------------------------- killed at any point, then run again

# Runs the command line with chunks of 16 rows and a SIGKILL of its own process at PUBLISH_KILL_AT.
KILLED_PUBLISH = """
import os, signal, sys, time
from pipelines.publish import catalogue, commit, publishing, source, staging
source.CHUNK_ROWS = 16
point = os.environ["PUBLISH_KILL_AT"]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(module, name, when=lambda result: True):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(result):
            die()
        return result
    setattr(module, name, wrapper)

staged = []
if point == "staging":  # after the second chunk is committed
    after(staging, "stage_chunk", lambda result: staged.append(result) or len(staged) == 2)
elif point == "slow-staging":  # killed from outside
    original = staging.stage_chunk
    staging.stage_chunk = lambda *args: (time.sleep(0.5), original(*args))[1]
elif point == "index":  # the new collection's index is built, the swap not begun
    after(commit, "_create_index")
elif point == "commit":  # the commit transaction's last statement ran, COMMIT did not
    after(catalogue, "write")
elif point == "after-commit":
    after(publishing, "commit")
from pipelines.publish.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _killed_publish(table: str, uri: str, point: str, db: Db | None = None, flags: tuple[str, ...] = ()) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISH, table, "--to", uri, "--collection", "docs", *flags],
        cwd=REPO, env={**os.environ, "PUBLISH_KILL_AT": point}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    if point == "slow-staging":  # SIGKILL the process group once a chunk is staged, from outside
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                "hub_embed_staged_chunks" in db.relations()
                and db.query("SELECT count(*) FROM hub_embed_staged_chunks")[0][0]
            ):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    return proc.wait(timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,point",
    [
        ("build", "staging"),
        ("build", "slow-staging"),
        ("build", "index"),
        ("build", "commit"),
        ("build", "after-commit"),
        ("merge", "staging"),
        ("merge", "commit"),
        ("merge", "after-commit"),
        ("beside", "index"),
        ("beside", "commit"),
    ],
)
def test_a_publish_killed_at_any_point_leaves_the_collection_as_it_was_and_a_rerun_completes_it(
    db, tables, mode, point, caplog, monkeypatch
):
    monkeypatch.setattr(source, "CHUNK_ROWS", 16)  # as the killed run's
    flags = ("--rebuild-above", "0") if mode == "beside" else ()  # "beside": a merge built beside the collection
    if mode != "build":
        assert publish(tables.v1, db.uri).rc == 0
    before, entry = (db.rows(), db.entry()) if mode != "build" else ({}, None)
    assert _killed_publish(tables.v2, db.uri, point, db, flags) == -signal.SIGKILL
    if point == "after-commit":
        assert {i: r[:3] for i, r in db.rows().items()} == {i: r[:3] for i, r in expected(tables.v2).items()}
    elif mode != "build":
        assert db.rows() == before and db.entry() == entry
    else:
        assert "docs" not in db.relations() and db.entry() is None
    with caplog.at_level("INFO", logger="hub_embed"):
        assert publish(tables.v2, db.uri, *flags).rc == 0
    assert changes(db).get("rebuilt", False) == (mode == "beside") or point == "after-commit"
    rows = db.rows()
    assert set(rows) == set(expected(tables.v2)) and db.query("SELECT count(*) FROM docs") == [(60,)]
    assert {i: r[:3] for i, r in rows.items()} == {i: r[:3] for i, r in expected(tables.v2).items()}
    if point == "staging":
        assert "2 of 4 chunks were staged by an earlier run of this publish" in caplog.text
    if point == "after-commit":
        assert changes(db) == {
            "mode": "merge", "inserted": 0, "updated": 0, "deleted": 0, "unchanged": 60, "staged": 0
        }  # fmt: skip
    assert db.work_left() == []
