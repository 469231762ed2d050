"""Handles as an attacker writes them: malformed URLs, stalling object stores, credentials over plain http."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines import inspect
from pipelines.hub import archives, registry
from pipelines.hub.errors import HandleError
from pipelines.hub.limits import Limits
from pipelines.hub.resolver import ResolveOptions
from tests.fixtures.servers import Route, StallingServer, _skip_beam_credential_lookup

PASSWORD = "pw-7e6d5c4b3a29"


@pytest.mark.parametrize(
    "handle, fault",
    [
        ("http://[::1/m.tar.gz", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999/m.tar.gz", "its port is not a number from 0 to 65535"),
        (f"https://reader:{PASSWORD}/m.tar.gz@host/", "its port is not a number from 0 to 65535"),
        ("http:///m.tar.gz", "it names no host"),
        ("s3:///models/m.tar.gz", "it names no host"),
        (f"http://reader:{PASSWORD}@[::1/m.tar.gz?token={PASSWORD}", "Invalid IPv6 URL"),
    ],
    ids=["open-ipv6-bracket", "port-99999", "password-as-port", "no-host", "no-bucket", "secrets-in-a-bad-url"],
)
def test_a_malformed_url_is_one_line_and_exit_2(handle, fault, capsys):
    with pytest.raises(HandleError, match="is not a valid URL"):
        registry.resolve(handle)
    assert inspect.main([handle]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Module handle ") and "is not a valid URL" in err, err
    assert fault in err and "Traceback" not in err
    assert PASSWORD not in err


def _resolve_within(handle: str, timeout_s: float, bound_s: float) -> tuple[BaseException | None, float]:
    """Resolves in a thread; returns what it raised and how long it took, failing if it runs past `bound_s`."""
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            registry.resolve(handle, timeout_s=timeout_s)
        except BaseException as e:
            outcome["error"] = e

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound_s)
    assert not thread.is_alive(), f"{handle} was still being resolved after {bound_s}s (timeout {timeout_s}s)"
    return outcome.get("error"), time.monotonic() - start


@pytest.fixture
def stalling():
    server = StallingServer()
    yield server
    server.close()


@pytest.mark.parametrize(
    "handle", ["s3://models/m.tar.gz", "s3://models/m/1", "gs://models/m.tar.gz", "gs://models/m/1"]
)
def test_object_store_handles_honour_the_timeout(handle, stalling, monkeypatch):
    if handle.startswith("s3://"):
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": stalling.endpoint,
        }.items():
            monkeypatch.setenv(key, value)
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", stalling.endpoint)
        monkeypatch.setenv("NO_GCE_CHECK", "True")
        _skip_beam_credential_lookup()
    import apache_beam.io.filesystems  # noqa: F401  (imported before the clock starts: it takes seconds on its own)

    error, took = _resolve_within(handle, timeout_s=2, bound_s=30)
    assert isinstance(error, HandleError) and "timed out after 2s" in str(error), error
    assert took < 10
    assert stalling.connections, "the client never reached the stalling endpoint"


def test_an_object_store_download_over_the_byte_cap_is_stopped(tiny, tmp_path, s3_server, module_cache):
    client = s3_server.client()
    client.create_bucket(Bucket="capped")
    archive = archives.pack_dir(tiny.text, str(tmp_path / "text.tar.gz"))
    with open(archive, "rb") as f:
        client.put_object(Bucket="capped", Key="text.tar.gz", Body=f.read())
    for rel in ("saved_model.pb", "a", "b", "c"):
        client.put_object(Bucket="capped", Key=f"dir/{rel}", Body=b"x" * 600)
    small = ResolveOptions(Limits(max_download_bytes=1000))
    with pytest.raises(HandleError, match=r"exceeds --max-download-bytes \(1,000\): more than 1,000 bytes"):
        registry.resolve("s3://capped/text.tar.gz", options=small)
    with pytest.raises(HandleError, match=r"exceeds --max-download-bytes \(1,000\): its objects hold 2,400 bytes"):
        registry.resolve("s3://capped/dir", options=small)
    with pytest.raises(HandleError, match=r"exceeds --max-archive-members \(3\): 4 objects"):
        registry.resolve("s3://capped/dir", options=ResolveOptions(Limits(max_archive_members=3)))
    assert registry.resolve("s3://capped/dir").fingerprint.startswith("sha256:")


def test_basic_auth_over_plain_http_is_refused_unless_allowed(tiny, tmp_path, http_server, module_cache, capsys):
    archive = archives.pack_dir(tiny.text, str(tmp_path / "text.tar.gz"))
    with open(archive, "rb") as f:
        http_server.routes["/private/m.tar.gz"] = Route(f.read(), auth=("reader", PASSWORD))
    handle = http_server.url("/private/m.tar.gz").replace("http://", f"http://reader:{PASSWORD}@")
    with pytest.raises(HandleError, match="over plain http://.*--allow-insecure-http"):
        registry.resolve(handle)
    assert http_server.hits["/private/m.tar.gz"] == 0, "the credentials were sent before the refusal"
    assert inspect.main([handle]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-insecure-http" in err and PASSWORD not in err
    allowed = registry.resolve(handle, options=ResolveOptions(allow_insecure_http=True))
    assert allowed.fingerprint.startswith("sha256:") and http_server.hits["/private/m.tar.gz"] == 1
    # No credentials, or https: nothing to refuse.
    http_server.routes["/public/m.tar.gz"] = Route(open(archive, "rb").read())
    assert registry.resolve(http_server.url("/public/m.tar.gz")).fingerprint == allowed.fingerprint


def test_embed_takes_the_same_guards_as_flags_and_yaml_keys(tiny, tmp_path, http_server, capsys):
    from pipelines.embedding import config
    from tests.fixtures.reliability import run

    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    bad = run(tmp_path / "out", "--input", src, "--module", f"http://reader:{PASSWORD}@[::1/m.tar.gz", capsys=capsys)
    assert bad.rc == 2 and bad.err.count("\n") == 1 and "is not a valid URL: Invalid IPv6 URL" in bad.err, bad.err
    assert PASSWORD not in bad.err
    archive = archives.pack_dir(tiny.text, str(tmp_path / "text.tar.gz"))
    with open(archive, "rb") as f:
        http_server.routes["/m.tar.gz"] = Route(f.read(), auth=("reader", PASSWORD))
    handle = http_server.url("/m.tar.gz").replace("http://", f"http://reader:{PASSWORD}@")
    refused = run(tmp_path / "out", "--input", src, "--module", handle, capsys=capsys)
    assert refused.rc == 2 and "--allow-insecure-http" in refused.err and PASSWORD not in refused.err
    capped = run(
        tmp_path / "out",
        "--input",
        src,
        "--module",
        handle,
        "--allow-insecure-http",
        "--max-download-bytes",
        "100",
        capsys=capsys,
    )
    assert capped.rc == 2 and "exceeds --max-download-bytes (100)" in capped.err, capped.err
    yaml_job = tmp_path / "job.yaml"
    yaml_job.write_text("max_archive_members: 5\nmax_compression_ratio: 50.5\nverify_cache: true\n")
    cfg = config.load(["--config", str(yaml_job), "--input", str(src), "--output", str(tmp_path / "o")])
    options = cfg.model.resolve_options()
    assert options.limits.max_archive_members == 5 and options.limits.max_compression_ratio == 50.5
    assert options.verify_cache and not options.allow_insecure_http
    assert cfg.config_hash() == config.load(["--input", str(src), "--output", str(tmp_path / "o")]).config_hash()
    with pytest.raises(config.ConfigError, match="max_unpacked_bytes must be positive"):
        config.load(["--input", str(src), "--output", str(tmp_path / "o"), "--max-unpacked-bytes", "0"])
