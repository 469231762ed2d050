"""What every hub-embed DAG shares: owner, tags, retries, first date, one run at a time."""

from __future__ import annotations

import datetime
import os
from typing import Any

RETRIES_ENV = "HUB_EMBED_RETRIES"

OWNER = "hub-embed"
TAGS = ["hub-embed"]
DEFAULT_RETRIES = 2
RETRY_DELAY = datetime.timedelta(minutes=5)
DEFAULT_START_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def default_args() -> dict[str, Any]:
    """owner, retries (`$HUB_EMBED_RETRIES`, default 2) and retry_delay of every task."""
    return {"owner": OWNER, "retries": int(os.environ.get(RETRIES_ENV, DEFAULT_RETRIES)), "retry_delay": RETRY_DELAY}


def dag_kwargs(**overrides: Any) -> dict[str, Any]:
    """Arguments every hub-embed DAG shares (default_args set once, here); `overrides` win."""
    return {"default_args": default_args(), "catchup": False, "tags": TAGS, "max_active_runs": 1, **overrides}
