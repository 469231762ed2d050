"""The module cache, verified rather than believed: private directories, safe lock files, tampered entries."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from pipelines import inspect
from pipelines.hub import archives, cache_entries, fingerprints, registry
from pipelines.hub.errors import HandleError
from pipelines.hub.resolver import ResolveOptions
from tests.fixtures.servers import Route


@pytest.fixture
def served(tiny, tmp_path, http_server):
    """The tiny text module's archive served over HTTP; returns its URL."""
    archive = archives.pack_dir(tiny.text, str(tmp_path / "text.tar.gz"))
    with open(archive, "rb") as f:
        http_server.routes["/m.tar.gz"] = Route(f.read())
    return http_server.url("/m.tar.gz")


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_cache_directories_are_private(served, tiny, module_cache):
    resolved = registry.resolve(served)
    registry.resolve(tiny.text)  # a local directory: its fingerprint is remembered in the cache
    for path in (module_cache, module_cache / ".staging", resolved.path, module_cache / "local-fingerprints"):
        assert _mode(path) == 0o700, path
    assert _mode(resolved.path + ".fingerprint") == 0o600


@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_a_link_planted_at_the_lock_path_never_overwrites_its_target(plant, served, tmp_path, module_cache, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("the operator's file\n")
    module_cache.mkdir()
    lock = module_cache / (hashlib.sha1(served.encode()).hexdigest() + ".lock")
    if plant == "symlink":
        lock.symlink_to(victim)
    else:
        os.link(victim, lock)
    with pytest.raises(HandleError, match="lock file .* is (a symbolic link|a hard link)"):
        registry.resolve(served)
    assert inspect.main([served]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lock file" in err
    assert victim.read_text() == "the operator's file\n"


def _entry_files(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


@pytest.mark.parametrize("tamper", ["file-added", "file-changed", "manifest-changed", "file-removed"])
def test_a_tampered_entry_is_fetched_again(tamper, served, http_server, caplog):
    first = registry.resolve(served)
    files = _entry_files(first.path)
    target = os.path.join(first.path, "saved_model.pb")
    if tamper == "file-added":
        with open(os.path.join(first.path, "variables", "extra.bin"), "wb") as f:
            f.write(b"added after caching")
    elif tamper == "file-changed":
        with open(target, "r+b") as f:
            f.write(b"\x00")
        os.utime(target, ns=(0, 0))
    elif tamper == "manifest-changed":
        with open(os.path.join(first.path, "module.json"), "w") as f:
            json.dump({"serving": {"batch_size": 1}}, f)
    else:
        os.remove(os.path.join(first.path, "variables", "variables.index"))
    again = registry.resolve(served)
    assert http_server.hits["/m.tar.gz"] == 2
    assert again == first
    assert _entry_files(again.path) == files
    assert fingerprints.fingerprint_dir(again.path) == first.fingerprint
    assert "no longer holds the files it was cached with; fetching it again" in caplog.text


def test_a_change_that_keeps_sizes_and_times_needs_verify_cache(served, http_server):
    first = registry.resolve(served)
    target = os.path.join(first.path, "saved_model.pb")
    before = os.stat(target)
    with open(target, "r+b") as f:
        f.write(b"\x00")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert registry.resolve(served) == first  # the cheap check cannot see it
    assert http_server.hits["/m.tar.gz"] == 1
    verified = registry.resolve(served, options=ResolveOptions(verify_cache=True))
    assert http_server.hits["/m.tar.gz"] == 2
    assert fingerprints.fingerprint_dir(verified.path) == first.fingerprint


@pytest.fixture
def hash_calls(monkeypatch):
    """Counts the files hashed (every file hash goes through `fingerprints.file_sha256`)."""
    calls: list[str] = []
    real = fingerprints.file_sha256

    def counting(path: str) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(fingerprints, "file_sha256", counting)
    return calls


def test_the_cheap_check_reads_no_file_and_verify_cache_reads_them_all(served, hash_calls):
    first = registry.resolve(served)
    cached = len(hash_calls)
    assert cached >= len(_entry_files(first.path))  # hashed once when the entry was built
    hash_calls.clear()
    assert registry.resolve(served) == first
    assert hash_calls == []
    assert registry.resolve(served, options=ResolveOptions(verify_cache=True)) == first
    assert len(hash_calls) == len(_entry_files(first.path))


def test_an_entry_recorded_before_the_check_existed_is_hashed_once_and_recorded(served, hash_calls):
    first = registry.resolve(served)
    record_path = first.path + cache_entries.RECORD_SUFFIX
    with open(record_path) as f:
        record = json.load(f)
    with open(record_path, "w") as f:
        json.dump({key: record[key] for key in ("handle", "fingerprint", "resolved_at")}, f)
    hash_calls.clear()
    assert registry.resolve(served) == first
    assert hash_calls
    hash_calls.clear()
    assert registry.resolve(served) == first
    assert hash_calls == []
