"""`make setup`'s Pillow-SIMD step, run for real on throwaway venvs, offline, from uv's package cache.

`make setup` fills that cache (Pillow from the lock, Pillow-SIMD built from its
source), so these install nothing from the network. Where the machine cannot
build Pillow-SIMD (no C compiler or no libjpeg/zlib headers), the step must
leave Pillow in place; where it can, it must install Pillow-SIMD.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UV = os.path.join(REPO, ".venv", "bin", "uv")


def _locked(name: str) -> str:
    with open(os.path.join(REPO, "requirements.lock")) as f:
        return next(line.split("==")[1].strip() for line in f if line.startswith(f"{name}=="))


PILLOW = _locked("pillow")


def _can_build_pillow() -> bool:
    """A C compiler and the libjpeg and zlib headers (at /usr/include or its multiarch folders)."""
    return bool(shutil.which("cc")) and all(
        glob.glob(f"/usr/include/**/{header}", recursive=True) for header in ("jpeglib.h", "zlib.h")
    )


def _offline() -> dict[str, str]:
    return {**os.environ, "UV_OFFLINE": "1"}


@pytest.fixture
def venv(tmp_path) -> str:
    """A venv holding only the lock's Pillow, stamped as `make setup`'s install step leaves it."""
    path = str(tmp_path / "venv")
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, path], check=True, env=_offline())
    _uv_install(path, f"pillow=={PILLOW}")
    _stamp_after(
        os.path.join(path, ".installed"), os.path.join(REPO, "pyproject.toml"), os.path.join(REPO, "requirements.lock")
    )
    return path


def _stamp_after(stamp: str, *paths: str) -> None:
    """Creates or touches `stamp` with a time after every one of `paths`', so make takes it as newer."""
    open(stamp, "a").close()
    when = max(os.path.getmtime(path) for path in paths) + 10
    os.utime(stamp, (when, when))


def _uv_install(venv: str, requirement: str) -> None:
    subprocess.run(
        [UV, "pip", "install", "-q", "--python", f"{venv}/bin/python", "--no-deps", requirement],
        check=True,
        env=_offline(),
    )


def _make_pillow_simd(venv: str, *variables: str) -> subprocess.CompletedProcess:
    """The Makefile's Pillow-SIMD target for `venv` (whose install step's stamp is newer than the lock)."""
    return subprocess.run(
        ["make", "-C", REPO, f"VENV={venv}", f"UV={UV}", *variables, f"{venv}/.pillow-simd"],
        capture_output=True,
        text=True,
        env=_offline(),
    )


def _pillow_in(venv: str) -> tuple[str, list[str]]:
    """`PIL.__version__` as the venv imports it (with `PIL.Image`), and the Pillow distributions it records."""
    out = subprocess.run(
        [
            f"{venv}/bin/python",
            "-c",
            "import importlib.metadata as m, PIL, PIL.Image; print(PIL.__version__); "
            "print(','.join(sorted(d.metadata['Name'].lower() for d in m.distributions() "
            "if d.metadata['Name'].lower().startswith('pillow'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], out[1].split(",")


def test_setup_installs_pillow_simd_where_it_builds_and_again_after_the_lock_reinstalls_pillow(venv):
    done = _make_pillow_simd(venv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.path.exists(f"{venv}/.pillow-simd")
    if not _can_build_pillow():
        assert "did not install" in done.stdout and _pillow_in(venv) == (PILLOW, ["pillow"])
        return
    assert _pillow_in(venv) == (f"{PILLOW}.post0", ["pillow-simd"]), done.stdout
    assert f"images are decoded by PIL {PILLOW}.post0" in done.stdout

    # The lock changes: the install step puts Pillow back over Pillow-SIMD's files, and its stamp is newer.
    _uv_install(venv, f"pillow=={PILLOW}")
    assert _pillow_in(venv) == (PILLOW, ["pillow", "pillow-simd"])
    _stamp_after(f"{venv}/.installed", f"{venv}/.pillow-simd")
    again = _make_pillow_simd(venv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _pillow_in(venv) == (f"{PILLOW}.post0", ["pillow-simd"])


def test_setup_keeps_pillow_when_pillow_simd_does_not_install(venv):
    done = _make_pillow_simd(venv, "PILLOW_SIMD_VERSION=0.0.0.post0")  # no such release
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"Pillow-SIMD 0.0.0.post0 did not install (see {venv}/pillow-simd.log): images are resized by Pillow {PILLOW}"
    ) in done.stdout
    assert "0.0.0.post0" in open(f"{venv}/pillow-simd.log").read()
    assert _pillow_in(venv) == (PILLOW, ["pillow"])
    assert f"images are decoded by PIL {PILLOW} " in done.stdout and os.path.exists(f"{venv}/.pillow-simd")
