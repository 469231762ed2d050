"""The running code's identity (package version, git commit), recorded in module manifests and table lineage."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import tomllib
from typing import Any

PACKAGE = "hub-embed"
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=_REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _package_version() -> str | None:
    """The installed package's version, else the one in the source tree's pyproject.toml."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with open(os.path.join(_REPO_DIR, "pyproject.toml"), "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def code_version() -> dict[str, Any]:
    """The running code: package version, git commit and whether the work tree had local changes.

    Returns:
      {"package", "version", "git_commit", "git_dirty"}; the git fields are
      None outside a git work tree.
    """
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"package": PACKAGE, "version": _package_version(), "git_commit": commit, "git_dirty": dirty}
