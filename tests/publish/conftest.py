"""Fixtures of the publish tests: the tables of `tests.fixtures.publish_cases`' corpus, embedded once per session."""

from __future__ import annotations

import types

import pytest

from tests.fixtures import tiny_modules as tm
from tests.fixtures.postgres import embed_table
from tests.fixtures.publish_cases import V1, V2


@pytest.fixture(scope="session")
def tables(tiny, tmp_path_factory):
    """v1 and v2 of a corpus (row groups of 16 rows), the same corpus by another module, another columns, per token."""
    root = tmp_path_factory.mktemp("tables")
    other_module = tm.build_text_module(str(root / "other-module"), seed=5)
    return types.SimpleNamespace(
        v1=embed_table(root / "v1", tiny.text, V1, rows_per_group=16),
        v2=embed_table(root / "v2", tiny.text, V2, rows_per_group=16),
        other=embed_table(root / "other", other_module, V1),
        no_columns=embed_table(root / "no-columns", tiny.text, V1, extra=()),
        per_token=embed_table(
            root / "per-token", tiny.text, V1, extra=("--signature", "tokens", "--output-key", "elmo")
        ),
    )
