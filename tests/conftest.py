"""Shared fixtures: tiny real modules, an isolated module cache, local servers, a PostgreSQL with pgvector."""

from __future__ import annotations

import os
import sys
import types

import pytest
from _pytest.nodeid import coerce_node_id

from tests.fixtures.postgres import Db, PostgresServer, session_server

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Test files whose tests share an expensive module-scoped fixture (a fine-tune, a built module, a worker venv built
# from the working tree): under pytest-xdist each file's tests run on one worker, so the fixture is built once.
ONE_WORKER_FILES = frozenset({"test_finetune.py", "test_portable.py"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Slow tests first, so that two xdist workers share them out before the quick ones fill the gaps.

    Also pins the tests of each file in ONE_WORKER_FILES to one worker (an `xdist_group` read by `--dist loadgroup`).
    The order is the same in every worker, as xdist requires.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise
    for item in items:
        if item.path.name in ONE_WORKER_FILES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    if getattr(config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
        for item in items:
            _tag_with_group(item)


def _tag_with_group(item: pytest.Item) -> None:
    """Suffixes the node id with its `xdist_group`s, the tag `--dist loadgroup` schedules by.

    pytest-xdist 3.8 writes the tag to `item._nodeid`, which pytest 9 no longer reads (the node id lives in
    `item._id`), so without this every group's tests would be spread over both workers.
    """
    groups = sorted(
        {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
    )
    if groups and "@" not in item.nodeid:
        item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")


@pytest.fixture(autouse=True)
def module_cache(tmp_path, monkeypatch):
    """Every test resolves remote modules into its own, empty cache."""
    path = tmp_path / "module-cache"
    monkeypatch.setenv("HUB_EMBED_CACHE_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def beam_filesystem_options():
    """Gives each test back Beam's file-system options as it found them.

    `FileSystems.set_options` is process-global: a job run in-process with `--s3_endpoint_url` would
    otherwise point every later test's `s3://` reads at that endpoint.
    """
    module = sys.modules.get("apache_beam.io.filesystems")
    before = getattr(module.FileSystems, "_pipeline_options", None) if module else None
    yield
    module = sys.modules.get("apache_beam.io.filesystems")  # imported by the test, perhaps
    if module is not None:
        module.FileSystems._pipeline_options = before


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of tiny real modules, built once per test session."""
    from tests.fixtures import tiny_modules as tm

    root = tmp_path_factory.mktemp("tiny-modules")
    return types.SimpleNamespace(
        text=tm.build_text_module(str(root / "text")),
        tf1=tm.build_tf1_hub_module(str(root / "tf1")),
        image=tm.build_image_module(str(root / "image"), 8, 8),
        image_open=tm.build_image_module(str(root / "image-open"), None, None),
        plain=tm.build_plain_module(str(root / "plain")),
    )


@pytest.fixture(scope="session")
def parent_root(tmp_path_factory, tiny):
    """A modules root with `tiny/1`: the tiny text module exported with a module.json (read-only: copy it)."""
    from tests.fixtures import release

    root = str(tmp_path_factory.mktemp("released"))
    release.export_parent(tiny.text, root)
    return root


@pytest.fixture
def http_server():
    from tests.fixtures.servers import HttpServer

    server = HttpServer()
    yield server
    server.close()


def _with_env(server, monkeypatch):
    """Points boto3 / google-cloud-storage at a session-wide local server for one test."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture(scope="session")
def _s3_server():
    from tests.fixtures.servers import S3Server

    server = S3Server()
    yield server
    server.close()


@pytest.fixture
def s3_server(_s3_server, monkeypatch):
    return _with_env(_s3_server, monkeypatch)


@pytest.fixture(scope="session")
def _gcs_server():
    from tests.fixtures.servers import GcsServer

    server = GcsServer()
    yield server
    server.close()


@pytest.fixture
def gcs_server(_gcs_server, monkeypatch):
    return _with_env(_gcs_server, monkeypatch)


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """An empty configs folder the DAGs read (HUB_EMBED_CONFIGS_DIR)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.setenv("HUB_EMBED_CONFIGS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Debian's, through playwright) shared by the HTML tests of a session."""
    from tests.fixtures.browser import chromium

    with chromium() as session:
        yield session


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL with pgvector per test session (per xdist worker), started on first use."""
    yield from session_server()


@pytest.fixture
def db(postgres: PostgresServer) -> Db:
    """A fresh database with the `vector` extension on the session's server."""
    return Db(postgres, postgres.database())
