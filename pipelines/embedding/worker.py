"""`python -m pipelines.embedding.worker`: Beam's SDK worker for multi-process DirectRunner jobs.

It ends without tearing the interpreter down once the harness is done, and
measures its own start-up (see docs/design/embedding.md).
"""

from __future__ import annotations

import time

_STARTED = time.monotonic()  # before any other import: the imports are part of the start-up

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from pipelines import console  # noqa: E402

# Seconds this process took to start its harness; None until then, and in
# processes that are not a `pipelines.embedding.worker` (the launcher, Dataflow workers).
_startup_s: float | None = None


def take_startup_s() -> float | None:
    """This worker's start-up seconds, once per process (None afterwards and outside workers)."""
    global _startup_s
    seconds, _startup_s = _startup_s, None
    return seconds


def run_harness(argv: Sequence[str], started: float) -> int:
    """Runs Beam's SDK worker harness until the runner is done with it.

    Args:
      argv: the process's arguments, for the harness.
      started: `time.monotonic()` when the process began its imports.

    Returns:
      The exit status: 0 when the harness ended normally, else 1 (or the
      status it exited with).
    """
    global _startup_s
    from apache_beam.runners.worker import sdk_worker_main  # Beam's harness: only worker processes import it

    from pipelines.embedding import commit  # Beam too: kept out of the launcher's import of this module

    commit.quiet_conflict_tracebacks()  # the launcher reports a lost commit in one line
    _startup_s = time.monotonic() - started
    try:
        sdk_worker_main.main(list(argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the harness logged it; the runner sees the status
        traceback.print_exc()
        return 1
    return 0


def exit_now(status: int) -> None:
    """Flushes logging and the standard streams, then ends the process without interpreter teardown.

    For commands whose work is done and whose files are closed: this worker,
    and `python -m pipelines.embed` once it has printed its summary.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    console.close_filter()  # the stderr filter's last lines are out before the process ends (atexit does not run)
    os._exit(status)


if __name__ == "__main__":
    from pipelines.embedding import worker  # this module under its own name, where the model handler reads the start-up

    exit_now(worker.run_harness(sys.argv, _STARTED))
