"""Module credentials work and are never written: not to the table, its manifest, the module cache or the logs.

A private module is fetched through the real command line from a local HTTP
server with Basic auth and a `?token=` query, and from moto's S3 server with a
secret access key; every file the run left and every log line is searched for
the secrets, also when the module is refused.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from tests.fixtures.reliability import run
from tests.fixtures.served_modules import tar as _tar
from tests.fixtures.served_modules import text_module_server


@pytest.fixture
def served(tiny, tmp_path, http_server):
    """The tiny text module's archive, and a way to serve any bytes under a path."""
    return text_module_server(tiny, tmp_path, http_server)


SECRET = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-0a1b2c3d4e5f"


def _everything_written(output: str, module_cache) -> str:
    """The text of every file a run left: manifest, parts (their metadata included) and the module cache records."""
    chunks = []
    for root in (output, str(module_cache)):
        for d, _, names in os.walk(root):
            for name in names:
                path = os.path.join(d, name)
                if os.path.getsize(path) < 5_000_000:
                    chunks.append(pathlib.Path(path).read_bytes().decode("latin-1"))
    return "\n".join(chunks)


def test_http_credentials_work_and_are_never_written(served, http_server, tmp_path, module_cache, capfd, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    served(f"/private/m.tar.gz?token={SECRET}", auth=("reader", PASSWORD))
    module = http_server.url(f"/private/m.tar.gz?token={SECRET}").replace("http://", f"http://reader:{PASSWORD}@")
    src = tmp_path / "in.txt"
    src.write_text("hello world\nsecond line\n")
    result = run(tmp_path / "out", "--input", src, "--module", module, "--allow-insecure-http")
    assert result.rc == 0
    result.assert_balanced(rows_in=2)
    manifest = result.manifest
    assert manifest["table"]["module"] == manifest["config"]["module"] == http_server.url("/private/m.tar.gz")
    written = _everything_written(result.output, module_cache)
    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    for secret in (SECRET, PASSWORD):
        assert secret not in written
        assert secret not in logs
    # Nor do the errors of a module that is refused.
    readme = tmp_path / "readme"
    readme.mkdir()
    (readme / "README").write_text("no module here")
    for path, body, message in [
        ("/private/page.tar.gz", b"<html>login</html>", "is not a valid .tar.gz"),
        ("/private/readme.tar.gz", _tar(str(readme), tmp_path / "readme.tar.gz"), "is not a TF Hub module"),
        ("/private/gone.tar.gz", None, "HTTP 404"),
    ]:
        if body is not None:
            served(f"{path}?token={SECRET}", body)
        bad = http_server.url(f"{path}?token={SECRET}").replace("http://", f"http://reader:{PASSWORD}@")
        refused = run(tmp_path / "refused", "--input", src, "--module", bad, "--allow-insecure-http", capsys=capfd)
        assert refused.rc == 2 and message in refused.err
        for secret in (SECRET, PASSWORD):
            assert secret not in refused.err + caplog.text


def test_s3_credentials_are_never_written(tiny, s3_server, tmp_path, module_cache, monkeypatch, capfd, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto takes any key; the point is where it ends up
    client = s3_server.client()
    client.create_bucket(Bucket="private-models")
    client.put_object(Bucket="private-models", Key="text-1.tar.gz", Body=_tar(tiny.text, tmp_path / "t.tar.gz"))
    src = tmp_path / "in.txt"
    src.write_text("hello world\n")
    result = run(
        tmp_path / "out",
        "--input",
        src,
        "--module",
        "s3://private-models/text-1.tar.gz",
        f"--s3_secret_access_key={SECRET}",
        "--s3_access_key_id=testing",
        f"--s3_endpoint_url={s3_server.endpoint}",
    )
    assert result.rc == 0
    result.assert_balanced(rows_in=1)
    out, err = capfd.readouterr()
    assert SECRET not in _everything_written(result.output, module_cache)
    assert SECRET not in caplog.text + out + err
