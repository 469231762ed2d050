"""Hostile module archives: a long-path symlink escape, a decompression bomb, too many entries, oversized downloads.

Each attack goes through `python -m pipelines.inspect`, from a local path or over
HTTP, and must end with exit 2, one line on stderr naming the cause (the limit
and its flag where a limit stops it), and nothing written outside the cache's
staging directory, which is removed.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import zlib

import pytest

from pipelines.hub import extraction, registry
from pipelines.hub.archives import ArchiveError
from pipelines.hub.errors import HandleError
from pipelines.hub.limits import LimitExceeded, Limits
from pipelines.hub.resolver import ResolveOptions
from tests.fixtures.servers import Route

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


def inspect(*args: str) -> subprocess.CompletedProcess:
    """Runs `python -m pipelines.inspect` as a user would (the test's module cache comes with the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.inspect", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2 and a single line on stderr holding every fragment; no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_cache_holds_no_module(cache) -> None:
    """The fetch left no entry and no staging directory behind (lock files are allowed)."""
    assert os.listdir(cache / ".staging") == []
    assert [name for name in os.listdir(cache) if not name.startswith(".") and not name.endswith(".lock")] == []


def snapshot(root, skip: str) -> dict[str, bytes | str]:
    """Every path under `root` but `skip`, with a file's bytes or a link's target."""
    seen: dict[str, bytes | str] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) != skip]
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                seen[path] = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    seen[path] = f.read()
    return seen


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def long_path_symlink_archive(path: str, staging_dest_len: int, levels_up: int, victim: str, planted: str) -> str:
    """An archive that escapes its destination on a Python whose extraction filter trusts `os.path.realpath`.

    Directories with long names, each reached through a one-letter symbolic
    link, make a path that fits in PATH_MAX while its expansion does not:
    `realpath` stops expanding there and judges what follows by its letters,
    while the kernel follows every link. A link from that point climbs
    `levels_up` directories above the destination; through it the archive
    hard-links `victim` and overwrites it, and writes the new file `planted`.

    Args:
      path: the archive to write.
      staging_dest_len: the length of the destination path it will be unpacked into.
      levels_up: how far above the destination the victim's directory is.
      victim: a file name in that directory to overwrite.
      planted: a new file name to create there.
    """
    steps = "abcdefghijklmnop"
    component = "d" * ((PATH_MAX - staging_dest_len) // (len(steps) + 1))
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "saved_model.pb", data=b"a module, supposedly")
        deep = ""
        for step in steps:
            _add(tar, os.path.join(deep, component), tarfile.DIRTYPE)
            _add(tar, os.path.join(deep, step), tarfile.SYMTYPE, component)
            deep = os.path.join(deep, component)
        too_long = os.path.join(*steps, "l" * 254)  # expands past PATH_MAX, so realpath leaves it unexpanded
        _add(tar, too_long, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))  # back to the destination
        _add(tar, "escape", tarfile.SYMTYPE, os.path.join(too_long, *[".."] * levels_up))
        _add(tar, "victim-link", tarfile.LNKTYPE, f"escape/{victim}")
        _add(tar, "victim-link", data=b"overwritten by the archive")
        _add(tar, f"escape/{planted}", data=b"planted by the archive")
    return path


def staging_dest_len(cache) -> int:
    """The length of `<cache>/.staging/<sha1>.<pid>.<8 hex>/module`, with the longest pid Linux gives."""
    return len(str(cache)) + len("/.staging/") + 40 + 1 + 7 + 1 + 8 + len("/module")


@pytest.mark.parametrize("over", ["path", "http"])
def test_long_path_symlink_archive_writes_nothing_outside_the_staging_directory(
    over, tmp_path, module_cache, http_server
):
    victim = tmp_path / "victim.txt"
    victim.write_text("the operator's file")
    archive = long_path_symlink_archive(
        str(tmp_path / "archives-m.tar.gz"), staging_dest_len(module_cache), 4, victim.name, "planted.txt"
    )
    if over == "http":
        with open(archive, "rb") as f:
            http_server.routes["/m.tar.gz"] = Route(f.read())
        handle = http_server.url("/m.tar.gz")
    else:
        handle = archive
    module_cache.mkdir()
    before = snapshot(tmp_path, str(module_cache))
    result = inspect(handle)
    assert victim.read_text() == "the operator's file"
    assert snapshot(tmp_path, str(module_cache)) == before
    assert_refused(result, "Unsafe archive", "is a symbolic link")
    assert_cache_holds_no_module(module_cache)


def test_the_hostile_archive_does_escape_an_extraction_that_trusts_realpath(tmp_path):
    """The archive is the real attack: without the entry-by-entry checks, the data filter lets it out here."""
    if sys.version_info >= (3, 11, 13) or sys.version_info[:2] >= (3, 12) and sys.version_info >= (3, 12, 11):
        pytest.skip("this Python's tarfile has the realpath fix; the attack is shown on 3.11.7")
    dest = tmp_path / "a" / "b" / "c" / "dest"
    dest.mkdir(parents=True)
    (tmp_path / "victim.txt").write_text("the operator's file")
    archive = long_path_symlink_archive(str(tmp_path / "m.tar.gz"), len(str(dest)) + 1, 4, "victim.txt", "planted.txt")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")  # the interpreter's own guard lets it through
    assert (tmp_path / "planted.txt").read_bytes() == b"planted by the archive"
    assert (tmp_path / "victim.txt").read_bytes() == b"overwritten by the archive"
    (tmp_path / "planted.txt").unlink()
    (tmp_path / "victim.txt").write_text("the operator's file")
    clean = tmp_path / "a" / "b" / "c" / "clean"
    clean.mkdir()
    with pytest.raises(ArchiveError, match="is a symbolic link"):
        extraction.safe_extract(archive, str(clean))
    assert not (tmp_path / "planted.txt").exists()
    assert (tmp_path / "victim.txt").read_text() == "the operator's file"


def test_a_link_already_on_disk_is_never_followed(tmp_path):
    """The on-disk check stands alone: a symlink planted in the destination is refused, not written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "variables").symlink_to(outside)
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "saved_model.pb", data=b"x")
        _add(tar, "variables/variables.index", data=b"through the link")
    with pytest.raises(ArchiveError, match=r"needs 'variables' to be a directory"):
        extraction.safe_extract(str(archive), str(dest))
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    "kind, link, message",
    [
        (tarfile.SYMTYPE, "saved_model.pb", "is a symbolic link"),
        (tarfile.LNKTYPE, "saved_model.pb", "is a hard link"),
        (tarfile.FIFOTYPE, "", "is a device or FIFO"),
        (tarfile.CHRTYPE, "", "is a device or FIFO"),
    ],
    ids=["symlink-inside", "hardlink-inside", "fifo", "device"],
)
def test_only_files_and_directories_are_unpacked(kind, link, message, tmp_path):
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "saved_model.pb", data=b"x")
        _add(tar, "assets/other", kind, link)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match=f"Unsafe archive .*'assets/other' {message}"):
        extraction.safe_extract(str(archive), str(dest))


# --------------------------------------------------------------------------- limits


def zeros_tar_gz(path: str, name: str, size: int) -> str:
    """A tar.gz of one file of `size` zero bytes, written without compressing them all.

    After a full flush deflate starts afresh, so every flushed MiB of zeros
    compresses to the same bytes: one is made and repeated.
    """
    info = tarfile.TarInfo(name)
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    trailer = bytes(2 * tarfile.BLOCKSIZE)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(1 << 20)
    start = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(size >> 20):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(trailer, crc)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + start)
        for _ in range(size >> 20):
            f.write(block)
        f.write(deflate.compress(trailer) + deflate.flush())
        f.write(struct.pack("<II", crc, (len(header) + size + len(trailer)) & 0xFFFFFFFF))
    return path


@pytest.fixture(scope="module")
def gib_of_zeros(tmp_path_factory) -> str:
    return zeros_tar_gz(str(tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"), "saved_model.pb", 1 << 30)


def test_a_one_megabyte_archive_of_a_gibibyte_of_zeros_is_stopped(gib_of_zeros, module_cache):
    assert os.path.getsize(gib_of_zeros) < 1_100_000
    assert_refused(inspect(gib_of_zeros), "exceeds --max-compression-ratio (200:1)", "bytes unpacked from")
    assert_cache_holds_no_module(module_cache)
    lifted = inspect(gib_of_zeros, "--max-compression-ratio", "1e9", "--max-unpacked-bytes", str(256 << 20))
    assert_refused(lifted, "exceeds --max-unpacked-bytes (268,435,456)", "'saved_model.pb' of 1,073,741,824 bytes")
    assert_cache_holds_no_module(module_cache)


def test_the_ratio_is_checked_while_unpacking_and_stops_at_once(gib_of_zeros, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(LimitExceeded, match="--max-compression-ratio"):
        extraction.safe_extract(gib_of_zeros, str(dest))
    written = os.path.getsize(dest / "saved_model.pb")
    assert 0 < written <= 65 << 20  # stopped just past the floor, not at the end


def many_entries_tar_gz(path: str, count: int) -> str:
    """A tar.gz of a saved_model.pb and `count` empty files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "saved_model.pb", data=b"x")
    head = buf.getvalue()[: 2 * tarfile.BLOCKSIZE]  # its header and its one block of data
    entry = tarfile.TarInfo()
    headers = []
    for i in range(count):
        entry.name = f"assets/{i:06d}"
        headers.append(entry.tobuf(format=tarfile.GNU_FORMAT))
    with open(path, "wb") as f:
        f.write(gzip.compress(head + b"".join(headers) + bytes(2 * tarfile.BLOCKSIZE), compresslevel=1))
    return path


def test_an_archive_of_a_hundred_thousand_entries_is_stopped_by_the_member_limit(tmp_path, module_cache):
    archive = many_entries_tar_gz(str(tmp_path / "many.tar.gz"), 100_000)
    result = inspect(archive, "--max-archive-members", "10000")
    assert_refused(result, "exceeds --max-archive-members (10,000)", "more than 10,000 entries")
    assert_cache_holds_no_module(module_cache)


def test_a_long_entry_path_is_stopped_by_the_default_limit(tmp_path):
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "saved_model.pb", data=b"x")
        _add(tar, "/".join(["d" * 200] * 6), data=b"x")
    with pytest.raises(HandleError, match=r"exceeds --max-member-path-length \(1,024\): .*1,205-byte path"):
        registry.resolve(str(archive))


@pytest.mark.parametrize("send_length", [True, False], ids=["announced", "counted-as-it-arrives"])
def test_an_http_download_over_the_byte_cap_is_stopped(send_length, tmp_path, http_server, module_cache):
    http_server.routes["/big.tar.gz"] = Route(os.urandom(3 << 20), send_length=send_length)
    result = inspect(http_server.url("/big.tar.gz"), "--max-download-bytes", str(1 << 20))
    seen = "it is 3,145,728 bytes" if send_length else "more than 1,048,576 bytes"
    assert_refused(result, "exceeds --max-download-bytes (1,048,576)", seen)
    assert_cache_holds_no_module(module_cache)


def test_the_limits_pass_real_modules_and_refuse_nonsense(tiny, tmp_path):
    from pipelines.hub import archives

    archive = archives.pack_dir(tiny.text, str(tmp_path / "text.tar.gz"))
    tight = Limits(max_archive_members=20, max_member_path_length=64, max_compression_ratio=5.0)
    assert registry.resolve(archive, options=ResolveOptions(tight)).fingerprint.startswith("sha256:")
    with pytest.raises(ValueError, match="--max-archive-members must be a positive number"):
        Limits(max_archive_members=0)
