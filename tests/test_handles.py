"""Module handles: every handle kind, the cache, concurrency, unsafe archives, errors."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import tarfile
import time

import pytest

from pipelines.hub import archives, binding, fingerprints, module_dirs, registry, resolver, tfhub_registration
from pipelines.hub.errors import HandleError
from pipelines.hub.module_manifest import MANIFEST_NAME
from pipelines.hub.redaction import redact


def _tar_bytes(module_dir: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for root, _, files in os.walk(module_dir):
            for name in files:
                full = os.path.join(root, name)
                tar.add(full, arcname=os.path.relpath(full, module_dir))
    return buf.getvalue()


@pytest.fixture(scope="module")
def text_tar(tiny, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tars") / "text.tar.gz")
    archives.pack_dir(tiny.text, path)
    return path


def _assert_same_module(resolved: resolver.ResolvedModule, source_dir: str) -> None:
    assert module_dirs.is_module_dir(resolved.path)
    assert resolved.fingerprint == fingerprints.fingerprint_dir(source_dir)


# --------------------------------------------------------------------------- local


def test_local_directory_resolves_in_place_with_stored_fingerprint(tiny, module_cache):
    resolved = registry.resolve(tiny.text)
    assert resolved.path == os.path.abspath(tiny.text)
    assert resolved.fingerprint.startswith("sha256:") and len(resolved.fingerprint) == 71
    records = os.listdir(module_cache / "local-fingerprints")
    assert len(records) == 1
    with open(module_cache / "local-fingerprints" / records[0]) as f:
        assert json.load(f)["fingerprint"] == resolved.fingerprint


def test_fingerprint_changes_with_content_and_ignores_manifest(tiny, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(tiny.text, copy)
    before = registry.resolve(copy).fingerprint
    with open(os.path.join(copy, MANIFEST_NAME), "w") as f:
        f.write('{"name": "x"}')
    assert registry.resolve(copy).fingerprint == before
    with open(os.path.join(copy, "assets.extra"), "w") as f:
        f.write("changed")
    assert registry.resolve(copy).fingerprint != before


def test_file_url_and_local_archive(tiny, text_tar):
    assert registry.resolve("file://" + os.path.abspath(tiny.text)).path == os.path.abspath(tiny.text)
    _assert_same_module(registry.resolve(text_tar), tiny.text)
    _assert_same_module(registry.resolve("file://" + text_tar), tiny.text)


# --------------------------------------------------------------------------- http


def test_http_archive_is_downloaded_once_and_reused(tiny, text_tar, http_server):
    from tests.fixtures.servers import Route

    http_server.routes["/m/text.tar.gz"] = Route(open(text_tar, "rb").read())
    url = http_server.url("/m/text.tar.gz")
    first = registry.resolve(url)
    _assert_same_module(first, tiny.text)
    second = registry.resolve(url)
    assert second == first
    assert http_server.hits["/m/text.tar.gz"] == 1
    assert os.path.exists(first.path + ".fingerprint")


def test_http_tfhub_compressed_convention(tiny, text_tar, http_server):
    from tests.fixtures.servers import Route

    http_server.routes["/models/text/1?tf-hub-format=compressed"] = Route(open(text_tar, "rb").read())
    _assert_same_module(registry.resolve(http_server.url("/models/text/1")), tiny.text)
    explicit = http_server.url("/models/text/1?tf-hub-format=compressed")
    _assert_same_module(registry.resolve(explicit), tiny.text)


def test_tfhub_load_uses_our_resolver_and_cache(tiny, text_tar, http_server, module_cache):
    import tensorflow as tf
    import tensorflow_hub as hub

    from tests.fixtures import tiny_modules as tm
    from tests.fixtures.servers import Route

    tfhub_registration.register_with_tfhub()
    http_server.routes["/text.tar.gz"] = Route(open(text_tar, "rb").read())
    loaded = hub.load(http_server.url("/text.tar.gz"))
    out = binding.call_default(loaded, tf.constant(["hello world"])).numpy()
    assert out == pytest.approx(tm.text_module_reference(["hello world"]), abs=1e-6)
    assert any(p.endswith(".fingerprint") for p in os.listdir(module_cache))


# --------------------------------------------------------------------------- gs:// and s3://


def _upload_dir(put, module_dir: str, prefix: str) -> None:
    for root, _, files in os.walk(module_dir):
        for name in files:
            full = os.path.join(root, name)
            put(prefix + os.path.relpath(full, module_dir), open(full, "rb").read())


def test_s3_directory_and_archive(tiny, text_tar, s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket="models")
    _upload_dir(lambda key, data: client.put_object(Bucket="models", Key=key, Body=data), tiny.text, "text/1/")
    client.put_object(Bucket="models", Key="text-1.tar.gz", Body=open(text_tar, "rb").read())
    _assert_same_module(registry.resolve("s3://models/text/1"), tiny.text)
    _assert_same_module(registry.resolve("s3://models/text-1.tar.gz"), tiny.text)
    with pytest.raises(HandleError, match="does not exist"):
        registry.resolve("s3://models/nothing/here")


def test_gcs_directory_and_archive(tiny, text_tar, gcs_server):
    bucket = gcs_server.client().create_bucket("hub-models")
    _upload_dir(lambda key, data: bucket.blob(key).upload_from_string(data), tiny.text, "text/1/")
    bucket.blob("text-1.tar.gz").upload_from_string(open(text_tar, "rb").read())
    _assert_same_module(registry.resolve("gs://hub-models/text/1/"), tiny.text)
    _assert_same_module(registry.resolve("gs://hub-models/text-1.tar.gz"), tiny.text)


# --------------------------------------------------------------------------- concurrency and crashes


def _resolve_in_child(url: str, cache: str, queue) -> None:
    os.environ["HUB_EMBED_CACHE_DIR"] = cache
    resolved = registry.resolve(url)
    queue.put((resolved.path, resolved.fingerprint))


def test_concurrent_resolve_from_several_processes(tiny, text_tar, http_server, module_cache):
    from tests.fixtures.servers import Route

    http_server.routes["/slow.tar.gz"] = Route(open(text_tar, "rb").read(), delay_s=0.5)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    url = http_server.url("/slow.tar.gz")
    procs = [ctx.Process(target=_resolve_in_child, args=(url, str(module_cache), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert len(set(results)) == 1
    assert http_server.hits["/slow.tar.gz"] == 1
    assert os.listdir(module_cache / ".staging") == []
    _assert_same_module(registry.resolve(url), tiny.text)


def test_killed_download_leaves_nothing_and_does_not_block(tiny, text_tar, http_server, module_cache):
    from tests.fixtures.servers import Route

    body = open(text_tar, "rb").read()
    http_server.routes["/m.tar.gz"] = Route(body, delay_s=30)
    url = http_server.url("/m.tar.gz")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()  # keep a reference until the child has unpickled it
    victim = ctx.Process(target=_resolve_in_child, args=(url, str(module_cache), queue))
    victim.start()
    deadline = time.monotonic() + 30
    while http_server.hits["/m.tar.gz"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_server.hits["/m.tar.gz"] == 1, "the child never started downloading"
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    key_dirs = [p for p in os.listdir(module_cache) if not p.startswith(".") and "." not in p]
    assert key_dirs == [], "a killed download must not leave a visible module"
    http_server.routes["/m.tar.gz"] = Route(body)
    start = time.monotonic()
    _assert_same_module(registry.resolve(url), tiny.text)
    assert time.monotonic() - start < 10
    assert os.listdir(module_cache / ".staging") == []


# --------------------------------------------------------------------------- unsafe archives


def _evil_tar(path: str, entries: list[tarfile.TarInfo], module_dir: str | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        if module_dir:
            tar.add(os.path.join(module_dir, "saved_model.pb"), arcname="saved_model.pb")
        for info in entries:
            data = b"pwned" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "entry, reason",
    [
        (_file("../evil.txt"), "'..'"),
        (_file("variables/../../evil.txt"), "'..'"),
        (_file("/tmp/hub-embed-evil.txt"), "absolute path"),
        (_link("assets/passwd", "/etc/passwd"), "points outside"),
        (_link("assets/up", "../../evil.txt"), "points outside"),
        (_link("hard", "../evil.txt", hard=True), "points outside"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-absolute", "symlink-up", "hardlink-up"],
)
def test_unsafe_archive_is_refused_and_writes_nothing_outside(tiny, tmp_path, http_server, module_cache, entry, reason):
    from tests.fixtures.servers import Route

    tar_path = _evil_tar(str(tmp_path / "evil.tar.gz"), [entry], tiny.text)
    http_server.routes["/evil.tar.gz"] = Route(open(tar_path, "rb").read())
    with pytest.raises(HandleError, match=f"Unsafe archive .*{reason}"):
        registry.resolve(http_server.url("/evil.tar.gz"))
    assert not os.path.exists("/tmp/hub-embed-evil.txt")
    assert not any("evil" in name for _, _, files in os.walk(module_cache) for name in files)
    assert not os.path.exists(module_cache / "evil.txt")
    assert os.listdir(module_cache / ".staging") == []


# --------------------------------------------------------------------------- errors


def test_missing_local_handle(tmp_path):
    with pytest.raises(HandleError, match=r"does not exist .*no such file"):
        registry.resolve(str(tmp_path / "nope"))


def test_directory_that_is_not_a_module(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(HandleError, match=r"is not a TF Hub module.*saved_model.pb.*notes.txt"):
        registry.resolve(str(tmp_path))


def test_unsupported_scheme():
    with pytest.raises(HandleError, match=r"Unsupported handle scheme 'ftp'.*supported: .*https://"):
        registry.resolve("ftp://example.com/m.tar.gz")


def test_http_404(http_server):
    with pytest.raises(HandleError, match="HTTP 404"):
        registry.resolve(http_server.url("/missing.tar.gz"))


def test_http_truncated_archive(text_tar, http_server):
    from tests.fixtures.servers import Route

    body = open(text_tar, "rb").read()
    http_server.routes["/cut.tar.gz"] = Route(body[: len(body) // 2], declared_length=len(body))
    with pytest.raises(HandleError, match="truncated"):
        registry.resolve(http_server.url("/cut.tar.gz"))


def test_truncated_archive_without_length_header(text_tar, tmp_path):
    body = open(text_tar, "rb").read()
    path = tmp_path / "half.tar.gz"
    path.write_bytes(body[: len(body) // 2])
    with pytest.raises(HandleError, match="not a valid .tar.gz"):
        registry.resolve(str(path))


def test_http_non_gzip_body(http_server):
    from tests.fixtures.servers import Route

    http_server.routes["/page.tar.gz"] = Route(b"<html>this is not a module</html>")
    with pytest.raises(HandleError, match="not a valid .tar.gz"):
        registry.resolve(http_server.url("/page.tar.gz"))


def test_archive_without_module(tmp_path, http_server):
    from tests.fixtures.servers import Route

    tar_path = _evil_tar(str(tmp_path / "empty.tar.gz"), [_file("README.txt")])
    http_server.routes["/readme.tar.gz"] = Route(open(tar_path, "rb").read())
    with pytest.raises(HandleError, match="is not a TF Hub module"):
        registry.resolve(http_server.url("/readme.tar.gz"))


def test_hanging_server_times_out(http_server):
    from tests.fixtures.servers import Route

    http_server.routes["/hang.tar.gz"] = Route(b"x", delay_s=5)
    start = time.monotonic()
    with pytest.raises(HandleError, match="timed out after 1s"):
        registry.resolve(http_server.url("/hang.tar.gz"), timeout_s=1)
    assert time.monotonic() - start < 4


def test_credentials_are_not_written_to_the_cache(text_tar, http_server, module_cache):
    from tests.fixtures.servers import Route

    http_server.routes["/m.tar.gz?token=s3cret"] = Route(open(text_tar, "rb").read())
    resolved = registry.resolve(http_server.url("/m.tar.gz?token=s3cret"))
    assert "s3cret" not in open(resolved.path + ".fingerprint").read()
    assert "s3cret" not in redact("https://user:hunter2@host/m.tar.gz?token=s3cret")
    assert "hunter2" not in redact("https://user:hunter2@host/m.tar.gz?token=s3cret")
