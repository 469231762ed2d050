"""A merge that writes many rows, built beside the collection and swapped in (`--rebuild-above`).

The same result as a merge in place; what a swap would lose (views, triggers, policies, publications,
indexes of its own, column grants) keeps the merge in place; a share that is not one is refused.
Real PostgreSQL with pgvector and real tables, as in `test_publish.py`.
"""

from __future__ import annotations

import pytest

from pipelines.publish.__main__ import main as publish_main
from pipelines.publish.__main__ import parser as publish_parser
from pipelines.publish.errors import PublishError
from pipelines.publish.options import PublishOptions
from tests.fixtures.publish_cases import changes, expected, publish, role

# --------------------------------------------------------------------------- a merge that writes many rows


def test_a_merge_over_the_share_builds_beside_with_the_result_of_one_in_place(db, tables, capsys):
    reader = role(db, "docs_reader")
    for collection in ("docs", "beside"):
        assert publish_main([tables.v1, "--to", db.uri, "--collection", collection]) == 0
    db.query(f"GRANT SELECT ON beside TO {reader}")
    capsys.readouterr()
    assert publish_main([tables.v2, "--to", db.uri, "--collection", "docs", "--rebuild-above", "never"]) == 0
    # 3 staged rows of 60: over a share of 0.04, the merge builds beside.
    assert publish_main([tables.v2, "--to", db.uri, "--collection", "beside", "--rebuild-above", "0.04"]) == 0
    out = capsys.readouterr().out
    assert out.count("merge (rebuilt beside the old collection): 1 inserted, 2 updated, 1 deleted") == 1
    assert changes(db, "beside") == {**changes(db, "docs"), "rebuilt": True}
    assert changes(db, "docs") == {
        "mode": "merge",
        "inserted": 1,
        "updated": 2,
        "deleted": 1,
        "unchanged": 57,
        "staged": 3,
    }
    assert set(db.entry("beside")["last_changes"]["seconds"]) == {
        "snapshot",
        "stage",
        "copy",
        "delete",
        "key",
        "commit",
    }
    assert db.rows("beside") == db.rows("docs")  # unchanged rows keep the run that wrote them
    assert sorted(n for n in db.relations() if n.startswith("beside")) == [
        "beside",
        "beside_embedding_idx",
        "beside_pkey",
    ]
    indexdef = db.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'beside_embedding_idx'")[0][0]
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')" in indexdef
    assert db.query("SELECT has_table_privilege(%s, 'beside', 'SELECT')", [reader]) == [(True,)]
    assert db.entry("beside")["row_count"] == 60 and db.work_left() == []
    # The same table again stages nothing: in place, nothing rewritten.
    before = db.xmins("beside")
    assert publish_main([tables.v2, "--to", db.uri, "--collection", "beside", "--rebuild-above", "0"]) == 0
    assert "rebuilt" not in changes(db, "beside") and db.xmins("beside") == before


# What a swap would lose: each keeps a merge in place. (SQL run as the superuser; then a check it is still there.)
EXTRAS = {
    "a view or rule depends on it": (
        ("CREATE VIEW docs_langs AS SELECT id, lang FROM docs",),
        "SELECT count(*) FROM docs_langs WHERE lang = 'fr'",
    ),
    "it has a trigger": (
        (
            "CREATE FUNCTION docs_touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
            "CREATE TRIGGER docs_touch BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION docs_touch()",
        ),
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'docs_touch'",
    ),
    "it has row security or a policy": (
        ("CREATE POLICY docs_all ON docs USING (true)",),
        "SELECT count(*) FROM pg_policy WHERE polname = 'docs_all'",
    ),
    "it is in a publication": (
        ("CREATE PUBLICATION docs_changes FOR TABLE docs",),
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'docs_changes'",
    ),
    "it has an index of its own": (
        ("CREATE INDEX docs_lang ON docs (lang)",),
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'docs_lang'",
    ),
    "it has column grants": (
        ("GRANT SELECT (id, lang) ON docs TO docs_reader",),
        "SELECT count(*) FROM information_schema.column_privileges WHERE grantee = 'docs_reader'",
    ),
}


@pytest.mark.parametrize("reason", list(EXTRAS))
def test_what_a_swap_would_lose_keeps_the_merge_in_place(db, tables, reason, caplog):
    role(db, "docs_reader")
    assert publish(tables.v1, db.uri).rc == 0
    create, check = EXTRAS[reason]
    for statement in create:
        db.query(statement)
    before = db.xmins()
    with caplog.at_level("INFO", logger="hub_embed"):
        assert publish(tables.v2, db.uri, "--rebuild-above", "0").rc == 0
    assert f"merging in place, since {reason}" in caplog.text
    assert changes(db) == {"mode": "merge", "inserted": 1, "updated": 2, "deleted": 1, "unchanged": 57, "staged": 3}
    assert {i: r[:3] for i, r in db.rows().items()} == {i: r[:3] for i, r in expected(tables.v2).items()}
    after = db.xmins()
    assert sum(after[i] == before[i] for i in before if i in after) == 57  # in place: the unchanged rows untouched
    assert db.query(check)[0][0] >= 1


@pytest.mark.parametrize("share", ["-0.1", "1e400"])
def test_a_bad_rebuild_share_is_refused_before_any_write(db, tables, share, capsys):
    result = publish(tables.v1, db.uri, "--rebuild-above", share, capsys=capsys)
    assert result.rc == 2 and "rebuild_above must be a share" in result.err
    assert "docs" not in db.relations()


def test_the_rebuild_share_takes_never_and_refuses_what_is_not_a_share(capsys):
    assert (
        publish_parser().parse_args(["t", "--to", "x", "--collection", "c", "--rebuild-above", "never"]).rebuild_above
        is None
    )
    with pytest.raises(SystemExit):
        publish_parser().parse_args(["t", "--to", "x", "--collection", "c", "--rebuild-above", "half"])
    assert "'half' is not a share (such as 0.15) or 'never'" in capsys.readouterr().err
    assert PublishOptions.from_dict({"rebuild_above": None}).rebuild_above is None
    for bad in (True, "0.2", -1):
        with pytest.raises(PublishError, match="rebuild_above"):
            PublishOptions.from_dict({"rebuild_above": bad})
