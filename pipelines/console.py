"""A quiet console for the project's commands: TensorFlow's start-up chatter hidden, real errors kept.

TensorFlow 2.21 prints its start-up lines from C++ through absl
(`WARNING: All log messages before absl::InitializeLog() ...`, `oneDNN custom
operations are on ...`, `Could not find cuda drivers ...`, CPU-instruction
notices, `failed call to cuInit ...`) straight to file descriptor 2, before
and regardless of `TF_CPP_MIN_LOG_LEVEL` (which still hides later C++ log
lines, errors too at level 3). No setting of TensorFlow's turns them off, so
the commands filter their own standard error instead:

- **Known C++ chatter** (`CHATTER`, matched line by line) is dropped by a small
  filter process that the command's file descriptor 2 is piped through. Every
  other line passes unchanged and at once: hub-embed's progress and errors, a
  module that fails to load, an op that is not registered, Python tracebacks,
  and any C++ log line not in the list. Worker processes the command starts
  inherit the pipe, so their lines are filtered too (and they do not start a
  filter of their own). The filter is a separate process, not a thread, so a
  command that crashes or is killed still gets its last lines out: the filter
  ends when every writer has closed the pipe.
- **Known third-party warnings** (`PYTHON_WARNINGS`: `tensorflow_hub`'s
  `pkg_resources is deprecated`) are ignored, and Beam's misleading
  `Resource module is not available for current platform` log line (logged
  on Linux whenever PyTorch is not installed) is dropped.

`--verbose` (every command) or `HUB_EMBED_VERBOSE=1` turns all of this off; the
setting is passed to worker processes through the environment.

`setup_for_command()` runs from `pipelines/__init__.py` when the process is a
`python -m pipelines.<command>` (or the `hub-embed` script): the package's
import is the only code that runs before a command module's own imports, one of
which may be TensorFlow's. Importing `pipelines` as a library (tests, DAGs,
notebooks) changes nothing.
"""

from __future__ import annotations

# The filter process runs this file with the standard library only: `os`, `re`, `signal`
# and `sys` are all it imports; the rest is imported where the command's side uses it.
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import argparse
    import subprocess

VERBOSE_ENV = "HUB_EMBED_VERBOSE"
# Set while a filter process reads this process's standard error: child processes inherit both.
FILTER_ENV = "HUB_EMBED_STDERR_FILTER"
SCRIPT_NAMES = ("hub-embed",)

# absl / glog line prefix: severity, MMDD, time (before absl is initialized: 0000 00:00:<epoch seconds>), thread id.
_ABSL = rb"[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ "
CHATTER = tuple(
    re.compile(pattern)
    for pattern in (
        rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
        _ABSL + rb"port\.cc:\d+\] oneDNN custom operations are on\. ",
        _ABSL + rb"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.$",
        _ABSL + rb"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU instructions ",
        rb"^To enable the following instructions: [A-Za-z0-9_ ,.]+, in other operations, rebuild TensorFlow with the "
        rb"appropriate compiler flags\.$",
        _ABSL + rb"cuda_(platform|executor|diagnostics)\.cc:\d+\] failed call to cuInit: ",
        _ABSL + rb"util\.cc:\d+\] oneDNN supports DT_[A-Z0-9]+ only on platforms with AVX-512\. Falling back ",
        _ABSL + rb"cuda_(dnn|blas|fft)\.cc:\d+\] Unable to register cu(DNN|BLAS|FFT) factory: ",
        _ABSL + rb"computation_placer\.cc:\d+\] computation placer already registered\. ",
        rb"^\S*TF-TRT Warning: Could not find TensorRT$",
    )
)
# (message regex, category) of Python warnings known to be noise.
PYTHON_WARNINGS = (
    (r"pkg_resources is deprecated as an API", UserWarning),
    (r"Deprecated call to `pkg_resources\.declare_namespace", DeprecationWarning),
)
# Log messages (prefixes) known to be noise.
LOG_NOISE = ("Resource module is not available for current platform, memory usage cannot be fetched.",)

_filter: subprocess.Popen | None = None
_real_stderr: int | None = None


def is_chatter(line: bytes) -> bool:
    """Whether one line of standard error (without its newline) is known start-up chatter."""
    line = line.rstrip(b"\r")
    return any(pattern.search(line) for pattern in CHATTER)


def filter_lines(source: BinaryIO, sink: BinaryIO) -> None:
    """Copies `source` to `sink` line by line, without the chatter, until end of file.

    Each kept line is written and flushed as soon as it is complete; a last
    line without a newline is written at end of file.
    """
    for line in iter(source.readline, b""):
        if not is_chatter(line.rstrip(b"\n")):
            sink.write(line)
            sink.flush()


def verbose(argv: Sequence[str] = ()) -> bool:
    """True when `--verbose` is among `argv` or `HUB_EMBED_VERBOSE` is set to a true value."""
    if "--verbose" in argv:
        return True
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Adds `--verbose` to a command's parser (it is acted on before the command's imports)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show TensorFlow's start-up lines and third-party warnings (also: {VERBOSE_ENV}=1)",
    )


def _is_log_noise(record: object) -> bool:
    """A `logging.Filter` callable: False (drop) for the known noise messages."""
    return not str(getattr(record, "msg", "")).startswith(LOG_NOISE)


def quiet_python() -> None:
    """Ignores the known third-party warnings and log lines in this process."""
    import logging
    import warnings

    for message, category in PYTHON_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    root = logging.getLogger()
    if _is_log_noise not in root.filters:
        root.addFilter(_is_log_noise)


def filter_stderr() -> None:
    """Pipes this process's file descriptor 2 through a filter process that drops `CHATTER`.

    Does nothing when a filter already reads it (a worker started by a
    filtered command). `close_filter` (also run at exit) restores it.
    """
    import atexit
    import subprocess

    global _filter, _real_stderr
    if _filter is not None or os.environ.get(FILTER_ENV):
        return
    read_end, write_end = os.pipe()
    env = {**os.environ, FILTER_ENV: str(os.getpid())}
    try:
        # This file run as a script, without site-packages (-I -S): it needs the standard library only.
        _filter = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read_end, env=env)
    except OSError:  # cannot start it: leave standard error as it is
        os.close(write_end)
        return
    finally:
        os.close(read_end)
    _flush()
    _real_stderr = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.environ[FILTER_ENV] = str(os.getpid())
    atexit.register(close_filter)


def close_filter(timeout_s: float = 5.0) -> None:
    """Gives file descriptor 2 back to the real standard error and lets the filter write its last lines.

    Waits up to `timeout_s` for the filter to end (it ends when no process
    writes to it any more), so nothing it still holds is printed after the
    command has exited.
    """
    import subprocess

    global _filter, _real_stderr
    if _filter is None or _real_stderr is None:
        return
    _flush()
    os.dup2(_real_stderr, 2)
    os.close(_real_stderr)
    _real_stderr = None
    os.environ.pop(FILTER_ENV, None)
    try:
        _filter.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # a process this one started still writes: it keeps the filter
        pass
    _filter = None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def command_of(orig_argv: Sequence[str], argv0: str) -> tuple[str, list[str]] | None:
    """The project command this process runs and its arguments, or None when it runs none.

    Args:
      orig_argv: the interpreter's command line (`sys.orig_argv`).
      argv0: `sys.argv[0]` (a console script's path).

    Returns:
      (`pipelines.<command>`, its arguments) for `python [options] -m pipelines.<command> ...`,
      (`hub-embed`, its arguments) for the console script, else None.
    """
    args = list(orig_argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = arg[2:] or (args[i + 1] if i + 1 < len(args) else "")
            rest = args[i + 1 :] if arg[2:] else args[i + 2 :]
            return (module, rest) if module.startswith("pipelines.") else None
        if arg in ("-c", "-") or not arg.startswith("-"):  # `-c CODE` or a script path: not `-m`
            break
        i += 2 if arg in ("-W", "-X") else 1  # the options that take a separate value
    if os.path.basename(argv0) in SCRIPT_NAMES:
        return os.path.basename(argv0), list(orig_argv[2:])
    return None


def setup_for_command() -> None:
    """Quiets the console when this process is one of the project's commands (see the module docstring)."""
    found = command_of(getattr(sys, "orig_argv", sys.argv), sys.argv[0] if sys.argv else "")
    if found is None:
        return
    if verbose(found[1]):
        os.environ[VERBOSE_ENV] = "1"  # for the worker processes it starts
        return
    quiet_python()
    filter_stderr()


def main() -> None:
    """The filter process (`filter_stderr` starts it): standard input to standard error, without the chatter."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command; its last lines still pass
    try:
        filter_lines(sys.stdin.buffer, sys.stderr.buffer)
    except BrokenPipeError:
        pass


if __name__ == "__main__":
    main()
