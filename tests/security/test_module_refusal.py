"""Bad modules and module URLs are refused before anything runs.

Modules are the tiny real SavedModels, served by a local HTTP server (or built
on disk). Through the command line, a refusal is exit 2 with one
`hub-embed: error:` line, no output and no file written outside the module cache
(an archive's `..` entry included); unsupported URL schemes, and an HTTP redirect
to one, are refused by `pipelines.hub.registry` too. The resolver-level cases are
in tests/test_handles.py and tests/security/test_archives.py.
"""

from __future__ import annotations

import os

import pytest

from pipelines.hub import module_dirs, registry, resolver
from pipelines.hub.errors import HandleError
from tests.fixtures import reliability as rel
from tests.fixtures.reliability import run
from tests.fixtures.served_modules import tar as _tar
from tests.fixtures.served_modules import text_module_server


@pytest.fixture
def served(tiny, tmp_path, http_server):
    """The tiny text module's archive, and a way to serve any bytes under a path."""
    return text_module_server(tiny, tmp_path, http_server)


def _evil_archive(tiny, tmp_path) -> bytes:
    import io
    import tarfile

    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(os.path.join(tiny.text, "saved_model.pb"), arcname="saved_model.pb")
        info = tarfile.TarInfo("variables/../../escaped.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pwned"))
    return path.read_bytes()


@pytest.mark.parametrize(
    "case, message",
    [
        ("404", "could not be downloaded: HTTP 404 Not Found"),
        ("hang", "timed out after 1s"),
        ("truncated", "is truncated: received"),
        ("not-gzip", "is not a valid .tar.gz"),
        ("unsafe", "Unsafe archive .* contains '..'"),
        ("not-a-module", "is not a TF Hub module"),
        ("no-such-signature", r"Signature 'serving' not found in module .*; valid signatures: 'default', 'tokens'"),
        ("no-signatures", "Signature 'default' not found in module .*; valid signatures: none"),
    ],
)
def test_bad_modules_are_refused_before_anything_runs(case, message, tiny, tmp_path, served, monkeypatch, capsys):
    monkeypatch.setattr(resolver, "DEFAULT_TIMEOUT_S", 1.0)
    args: list = ["--signature", "serving"] if case == "no-such-signature" else []
    if case == "404":
        module = served("/m.tar.gz", status=404)
    elif case == "hang":
        module = served("/m.tar.gz", delay_s=5)
    elif case == "truncated":
        module = served("/m.tar.gz", served.body[:1000], declared_length=len(served.body))
    elif case == "not-gzip":
        module = served("/m.tar.gz", b"<html>an error page</html>")
    elif case == "unsafe":
        module = served("/m.tar.gz", _evil_archive(tiny, tmp_path))
    elif case == "not-a-module":
        readme = tmp_path / "readme"
        readme.mkdir()
        (readme / "README").write_text("no module here")
        module = served("/m.tar.gz", _tar(str(readme), tmp_path / "readme.tar.gz"))
    elif case == "no-such-signature":
        module = served("/m.tar.gz")
    else:
        module = rel.build_module_without_signatures(str(tmp_path / "bare"))
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    result = run(tmp_path / "out", "--input", src, "--module", module, *args, capsys=capsys)
    assert result.rc == 2
    assert result.err.startswith("hub-embed: error: ")
    import re

    assert re.search(message, result.err), result.err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not any("escaped" in f for _, _, files in os.walk(tmp_path) for f in files)


@pytest.mark.parametrize(
    "handle",
    [
        "ftp://example.com/m.tar.gz",
        "javascript:alert(1)",
        "data:application/gzip;base64,H4sIAAAAAAAA",
        "gopher://example.com/m",
        "hdfs://namenode/m",
        "jar:file:///m.jar!/m",
        "smb://share/m.tar.gz",
    ],
)
def test_only_the_documented_module_url_schemes_are_resolved(handle, tmp_path, capsys):
    with pytest.raises(HandleError, match=r"Unsupported handle scheme .*supported: .*s3://"):
        registry.resolve(handle)
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    result = run(tmp_path / "out", "--input", src, "--module", handle, capsys=capsys)
    assert result.rc == 2 and "Unsupported handle scheme" in result.err


def test_an_http_redirect_to_another_scheme_is_refused(served, http_server):
    target = served("/m.tar.gz")
    served("/to-ftp.tar.gz", b"", status=302, headers={"Location": "ftp://127.0.0.1:1/m.tar.gz"})
    served("/to-http.tar.gz", b"", status=302, headers={"Location": target})
    with pytest.raises(HandleError, match="redirected to an unsupported scheme 'ftp'"):
        registry.resolve(http_server.url("/to-ftp.tar.gz"))
    assert module_dirs.is_module_dir(registry.resolve(http_server.url("/to-http.tar.gz")).path)
