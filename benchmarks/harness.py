"""What every benchmark shares: the machine it ran on, contender processes, statistics and result files."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from benchmarks import cpu

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
PYCACHE_DIR = os.path.join("build", "bench-pycache")
RESULT_FILE = "result.json"
LOG_TAIL_LINES = 15
# A load average above this many per core at the start means other work shares the machine.
BUSY_LOAD_PER_CORE = 0.3
VERSIONED_PACKAGES = ("tensorflow", "tensorflow-text", "tensorflow-hub", "apache-beam", "pyarrow")


# --------------------------------------------------------------------------- the machine


def package_versions(packages: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """The installed version of each package (None: not installed)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def load_average() -> float:
    """The machine's one-minute load average now."""
    return os.getloadavg()[0]


def steal_seconds(stat_path: str = "/proc/stat") -> float | None:
    """CPU seconds the hypervisor has given other guests since boot, summed over this VM's CPUs.

    Read from `steal` in `/proc/stat`; None where the kernel does not report
    it. The difference around a run says how much of its wall time was not its own.
    """
    try:
        with open(stat_path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def pillow_build() -> str:
    """Which Pillow decodes images here (`Pillow-SIMD 12.1.1.post0` or `Pillow 12.1.1`)."""
    # Imported here: the embedding package imports Beam, which the result renderer does not need.
    from pipelines.embedding import preprocess

    return preprocess.pillow_build()


def machine() -> dict[str, Any]:
    """The machine a benchmark runs on, now: date, CPU model, flags and cores, load, Python and package versions."""
    cpu_model, flags = cpu.read_cpuinfo()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model,
        "cpu_flags": cpu.listed_flags(flags),
        "cpu_features": cpu.features(flags),
        "cores": os.cpu_count(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "pillow": pillow_build(),
    }


def finish(meta: dict[str, Any]) -> dict[str, Any]:
    """Adds the end of a run to its `machine()` metadata: the load average then, and the run's duration."""
    started = datetime.datetime.fromisoformat(meta["date"])
    meta["load_average_at_end"] = load_average()
    meta["duration_s"] = round((datetime.datetime.now(datetime.UTC) - started).total_seconds())
    return meta


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that ran a benchmark: `python -m MODULE` and its arguments (`sys.argv`'s when None)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def cpu_line(meta: dict[str, Any]) -> str:
    """A report header's CPU line: model name and which of `cpu.KEY_FLAGS` it has."""
    found = meta.get("cpu_features") or {}
    return cpu.summary(meta["cpu"], meta["cores"], {flag: found[flag] for flag in cpu.KEY_FLAGS if flag in found})


def busy_at_start(meta: dict[str, Any]) -> bool:
    """Whether other work loaded the machine when the benchmark started."""
    return meta["load_average_at_start"] > BUSY_LOAD_PER_CORE * (meta.get("cores") or 1)


# --------------------------------------------------------------------------- contender processes


class CommandError(RuntimeError):
    """A benchmark's command failed or timed out; the message ends with the tail of its log."""


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Calls `fn()`; returns its result and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def contender_env(intra_op: int, inter_op: int) -> dict[str, str]:
    """The environment of a contender process.

    Thread counts, offline model hubs, `benchmarks` importable, and bytecode
    cached (under `build/`, outside the virtual environments) so that Beam's
    worker processes start as they would on a user's machine.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else every worker process compiles TensorFlow's sources anew
    path = env.get("PYTHONPATH")
    env.update(
        PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""),
        PYTHONPYCACHEPREFIX=os.path.join(REPO_ROOT, PYCACHE_DIR),
        TF_NUM_INTRAOP_THREADS=str(intra_op),
        TF_NUM_INTEROP_THREADS=str(inter_op),
        OMP_NUM_THREADS=str(intra_op),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONHASHSEED="0",
    )
    return env


def tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file."""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:]).strip()


def run_logged(cmd: list[str], log_path: str, env: dict[str, str], timeout: float, cwd: str = REPO_ROOT) -> float:
    """Runs a command with its output in `log_path`; returns its wall seconds.

    Raises:
      CommandError: it exited non-zero or ran past `timeout` seconds.
    """
    with open(log_path, "w") as log:
        start = time.monotonic()
        try:
            status = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            raise CommandError(f"timed out after {timeout}s; log:\n{tail(log_path)}") from None
        seconds = time.monotonic() - start
    if status != 0:
        raise CommandError(f"exit status {status}; log:\n{tail(log_path)}")
    return seconds


def run_contender_process(
    cmd: list[str], workdir: str, env: dict[str, str], timeout: float, result_path: str | None = None
) -> dict[str, Any]:
    """Runs one contender in a process of its own, which writes its result JSON.

    Args:
      cmd: the contender's command.
      workdir: its directory (created; its log goes to `log.txt` there).
      env: its environment (`contender_env`).
      timeout: seconds it may take.
      result_path: where it writes its result (default `workdir/result.json`).

    Returns:
      Its result with `steal_s` (host steal during the process, None where not
      reported), or `{"error": ...}` with the tail of its log.
    """
    os.makedirs(workdir, exist_ok=True)
    result_path = result_path or os.path.join(workdir, RESULT_FILE)
    steal_before = steal_seconds()
    try:
        run_logged(cmd, os.path.join(workdir, "log.txt"), env, timeout)
    except CommandError as e:
        return {"error": str(e)}
    if not os.path.exists(result_path):
        return {"error": f"no result at {result_path}; log:\n{tail(os.path.join(workdir, 'log.txt'))}"}
    with open(result_path) as f:
        result = json.load(f)
    steal_after = steal_seconds()
    result["steal_s"] = None if steal_before is None or steal_after is None else steal_after - steal_before
    return result


def process_peak_rss_mb() -> float:
    """This process's peak RSS so far in MiB: the kernel's high-water mark, exact."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------- statistics


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The row-wise cosine similarities of two matrices with the same rows (float64; rows flattened)."""
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    other = np.asarray(other, np.float64).reshape(len(other), -1)
    dot = np.sum(reference * other, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    return dot / np.maximum(norms, 1e-12)


def min_cosine(reference: np.ndarray, other: np.ndarray) -> float:
    """The smallest row-wise cosine similarity of two matrices with the same rows."""
    return float(np.min(cosines(reference, other)))


def median(values: Iterable[float]) -> float | None:
    """The median, or None when there are no values."""
    values = list(values)
    return float(np.median(values)) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator`, or None when either is missing (or the denominator is 0)."""
    return numerator / denominator if numerator is not None and denominator else None


def paired_ratios(runs: dict[str, list[dict[str, Any]]], name: str, base: str, key: str) -> list[float]:
    """`name`'s `key` over `base`'s, round by round.

    Run i of each contender ran back to back, so load that drifts between
    rounds cancels out; rounds where either failed are left out.
    """
    return [
        a[key] / b[key] for a, b in zip(runs.get(name, []), runs.get(base, [])) if "error" not in a and "error" not in b
    ]


def check_targets(metrics: dict[str, Any], targets: Iterable[tuple[str, str, float]]) -> dict[str, dict[str, Any]]:
    """Each target `(metric, ">=" or "<=", bound)` with its value and whether it holds (None: not measured)."""
    checks = {}
    for key, comparison, bound in targets:
        value = metrics.get(key)
        met = None if value is None else (value >= bound if comparison == ">=" else value <= bound)
        checks[key] = {"value": value, "target": f"{comparison} {bound}", "met": met}
    return checks


# --------------------------------------------------------------------------- result files


def result_path(benchmark: str) -> str:
    """Where a benchmark's result file goes by default: `benchmarks/results/<benchmark>.json`."""
    return os.path.join(RESULTS_DIR, f"{benchmark}.json")


def write_result(benchmark: str, report: dict[str, Any], path: str | None = None) -> str:
    """Writes a benchmark's report as its result file (with `benchmark` first); returns the path."""
    path = path or result_path(benchmark)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmark": benchmark, **report}, f, indent=2, default=str)
        f.write("\n")
    print(f"result written to {os.path.relpath(path)}", file=sys.stderr)
    return path
