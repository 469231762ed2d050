"""Where the DAGs find the project: its root, the configs and modules folders, the interpreter that runs pipelines.

Relative local paths in configs and DAG params are taken from `PROJECT_ROOT`
(`pipelines.embedding.paths.absolute(path, PROJECT_ROOT)`): Airflow workers run anywhere.
"""

from __future__ import annotations

import os
import sys

PROJECT_ROOT_ENV = "HUB_EMBED_PROJECT_ROOT"
CONFIGS_DIR_ENV = "HUB_EMBED_CONFIGS_DIR"
MODULES_ROOT_ENV = "HUB_EMBED_MODULES_ROOT"
PYTHON_ENV = "HUB_EMBED_PYTHON"

PROJECT_ROOT = os.environ.get(PROJECT_ROOT_ENV) or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
"""`$HUB_EMBED_PROJECT_ROOT`, else the checkout this package is installed from in development mode."""


def configs_dir() -> str:
    """The folder scanned for job configs: `$HUB_EMBED_CONFIGS_DIR`, else `<project>/configs`."""
    return os.environ.get(CONFIGS_DIR_ENV) or os.path.join(PROJECT_ROOT, "configs")


def modules_root() -> str:
    """Default modules root of the fine-tune DAG: `$HUB_EMBED_MODULES_ROOT`, else `<project>/build/modules`."""
    return os.environ.get(MODULES_ROOT_ENV) or os.path.join(PROJECT_ROOT, "build", "modules")


def python() -> str:
    """Interpreter that runs the pipelines: `$HUB_EMBED_PYTHON`, else this worker's own."""
    return os.environ.get(PYTHON_ENV) or sys.executable
