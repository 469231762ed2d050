"""The DAGs' planning helpers: the previous committed table, what a run may reuse, what its report compares with.

Plain functions of `pipelines.orchestration.plans`, no Airflow: they read table folders made to look committed,
local ones and gs:// and s3:// ones on the local servers.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.fixtures.dag_jobs import commit

# --------------------------------------------------------------------------- the previous committed run


def test_previous_table_is_the_newest_earlier_committed_run(tmp_path):
    from pipelines.orchestration import plans

    base = tmp_path / "tables"
    assert plans.previous_table(str(base), "20240105T000000") is None  # first run: no folder yet
    commit(base, "20240101T000000", "20240102T000000", "20240103T000000", "20240104T000000")
    commit(base, "tiny-v2/20240102T120000", "notes")  # a re-embedding folder, not a run stamp
    (base / "20240102T000000-500000").mkdir()  # a later run that never committed
    (base / "20240102T000000-500000" / "part-00000.parquet").write_bytes(b"x")
    (base / "20240102T060000.tmp").mkdir()

    assert plans.previous_table(str(base), "20240101T000000") is None  # nothing committed before the first
    assert plans.previous_table(str(base), "20240103T000000") == str(base / "20240102T000000")  # not its own (a retry)
    assert plans.previous_table(str(base) + "/", "20240103T000000-000001") == str(base / "20240103T000000")
    assert plans.previous_table(str(base), "20240110T000000") == str(base / "20240104T000000")
    assert plans.previous_table(str(base / "tiny-v2"), "20240110T000000") == str(base / "tiny-v2" / "20240102T120000")


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_previous_table_on_an_object_store(store, request):
    """gs:// and s3:// through Beam's filesystems, against the local servers."""
    from pipelines.orchestration import plans

    if store == "gcs":
        bucket = request.getfixturevalue("gcs_server").client().create_bucket("tables-prev")
        put, base = (lambda key: bucket.blob(key).upload_from_string(b"{}")), "gs://tables-prev/jobs/tiny"
    else:
        client = request.getfixturevalue("s3_server").client()
        client.create_bucket(Bucket="tables-prev")
        put, base = (
            (lambda key: client.put_object(Bucket="tables-prev", Key=key, Body=b"{}")),
            "s3://tables-prev/jobs/tiny",
        )
    assert plans.previous_table(base, "20240105T000000") is None
    for key in (
        "20240101T000000/_SUCCESS",
        "20240102T000000/part-00000.parquet",
        "20240103T000000/_SUCCESS",
        "tiny-v2/20240104T000000/_SUCCESS",
        "jobs-other/20240104T000000/_SUCCESS",
    ):
        put("jobs/tiny/" + key)
    put("jobs/tiny-other/20240104T000000/_SUCCESS")  # shares the prefix `jobs/tiny`, not the folder
    assert plans.previous_table(base, "20240103T000000") == base + "/20240101T000000"
    assert plans.previous_table(base, "20240105T000000") == base + "/20240103T000000"


def test_plans_offer_only_their_own_folder_for_reuse(tmp_path):
    """A scheduled run reuses the base folder's runs; a re-embedding only earlier runs of its own module version."""
    from pipelines.orchestration import plans

    base = tmp_path / "tables"
    commit(base, "20240101T000000", "tiny-v2/20240102T000000")
    update = {"name": "tiny", "version": 3, "handle": "/modules/tiny/3"}
    assert plans.scheduled_plan(str(base), "/m", "20240103T000000") == {
        "module": "/m",
        "output": str(base / "20240103T000000"),
        "reuse": str(base / "20240101T000000"),
    }
    plan = plans.reembed_plan(update, "tiny", str(base), "20240103T000000")
    assert plan == {
        "module": "/modules/tiny/3",
        "output": str(base / "tiny-v3" / "20240103T000000"),
        "reuse": None,
        "previous": None,  # `commit` writes manifests without table metadata: nothing to compare with
    }
    commit(base, "tiny-v3/20240102T000000")
    assert plans.reembed_plan(update, "tiny", str(base), "20240103T000000")["reuse"] == str(
        base / "tiny-v3" / "20240102T000000"
    )
    assert plans.scheduled_plan(str(base), "/m", "20240103T000000")["reuse"] == str(base / "20240101T000000")


def commit_table(folder, name: str, module_name: str | None, version: int | None, **table) -> None:
    """Makes `<folder>/<name>/` look like a committed table of `module_name` v`version` (its manifest's table entry)."""
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    entry = {"fingerprint": f"sha256:{name}", "dimension": 8, "module_name": module_name, "module_version": version}
    with open(os.path.join(folder, name, "_SUCCESS"), "w") as f:
        json.dump({"files": [], "table": {**entry, **table}}, f)


def test_reembed_compares_with_the_newest_table_of_an_earlier_version(tmp_path):
    """The plan's `previous`: the newest run before this one whose module version is earlier (or unknown)."""
    from pipelines.orchestration import plans

    base = tmp_path / "tables"
    update = {"name": "tiny", "version": 3, "handle": "/modules/tiny/3"}

    def previous(stamp: str = "20240110T000000", version: int = 3) -> str | None:
        assert plans.reembed_plan({**update, "version": version}, "tiny", str(base), stamp)["previous"] == (
            found := plans.previous_version_table(str(base), "tiny", version, stamp)
        )
        return found

    assert previous() is None  # no folder yet
    commit_table(base, "20240101T000000", "tiny", 1)
    assert previous() == str(base / "20240101T000000")
    commit_table(base, "tiny-v2/20240102T000000", "tiny", 2)
    assert previous() == str(base / "tiny-v2" / "20240102T000000")
    commit_table(base, "20240103T000000", "tiny", 3)  # a scheduled run already on v3 (handle `latest`)
    commit_table(base, "tiny-v3/20240104T000000", "tiny", 3)  # this version's own earlier run: reuse, not previous
    commit_table(base, "tiny-v4/20240105T000000", "tiny", 4)  # a later version
    commit_table(base, "20240106T000000", "tiny", 2, sequence=True)  # per-token vectors: no neighbours to compare
    commit(base, "20240107T000000")  # a manifest without table metadata
    assert previous() == str(base / "tiny-v2" / "20240102T000000")
    commit_table(base, "20240108T000000", "other", 9)  # another module's table: its version says nothing
    commit_table(base, "20240109T000000", None, None)  # a module without a module.json
    assert previous() == str(base / "20240109T000000")
    assert previous("20240109T000000") == str(base / "20240108T000000")  # only runs before this one
    assert previous("20240101T000000") is None
    assert previous("20240106T000000", version=5) == str(base / "tiny-v4" / "20240105T000000")
