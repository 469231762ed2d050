"""Bounding a blocking transfer by its progress: it fails when no progress is made for the timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How often the waiting thread looks at the transfer's progress.
_POLL_S = 0.1


class Stalled(TimeoutError):
    """The transfer made no progress for the whole timeout."""


class Abandoned(Exception):
    """Raised inside an abandoned transfer at its next progress, so that it stops."""


class Progress:
    """What a guarded transfer calls after each step (an object listed, a chunk read)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.abandoned = threading.Event()

    def __call__(self) -> None:
        """Records progress; raises `Abandoned` once the waiting side has given up."""
        if self.abandoned.is_set():
            raise Abandoned()
        self.last = time.monotonic()


def run_guarded(transfer: Callable[[Progress], T], timeout_s: float) -> T:
    """Runs `transfer(progress)` in a daemon thread and returns its result, or raises `Stalled`.

    Storage clients retry inside their own calls for minutes, whatever
    timeout the caller had in mind. This bounds each step instead: the
    transfer calls `progress()` after each one, and when none comes for
    `timeout_s` the caller gets `Stalled` at once. The abandoned thread is a
    daemon (it never holds up the interpreter's exit) and stops at its next
    `progress()`.

    Raises:
      Stalled: no progress for `timeout_s` seconds.

    Whatever `transfer` raises is raised again here.
    """
    progress = Progress()
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = transfer(progress)
        except BaseException as e:  # handed to the waiting thread, which raises it
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="hub-guarded-transfer", daemon=True).start()
    try:
        while not done.wait(_POLL_S):
            if time.monotonic() - progress.last > timeout_s:
                raise Stalled(f"no progress for {timeout_s:g}s")
    finally:
        if not done.is_set():
            progress.abandoned.set()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
