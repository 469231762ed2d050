"""The quiet console: TensorFlow's start-up chatter and known warnings hidden, real errors shown, `--verbose` shows all.

The commands run as real processes (`python -m pipelines.embed`), without
`TF_CPP_MIN_LOG_LEVEL` in their environment, so they import TensorFlow as a
user's shell would.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import pytest

from pipelines import console

CHATTER_LINES = [  # as TensorFlow 2.21 prints them here
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796152494.575299   13585 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. To turn "
    b"them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    b"I0000 00:00:1796152494.576793   13585 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    b"not be used.",
    b"I0000 00:00:1796152494.650581   13585 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.",
    b"To enable the following instructions: SSE3 SSE4.1 SSE4.2 AVX AVX2 FMA, in other operations, rebuild TensorFlow "
    b"with the appropriate compiler flags.",  # an older CPU's list
    b"E0000 00:00:1796152505.928835   13585 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    b"call to cuInit: UNKNOWN ERROR (303)",
    b"E0000 00:00:1796152508.951211   13585 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. "
    b"Falling back to the default Eigen-based implementation if present.",
    b"E1201 19:14:54.179000   13585 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register "
    b"factory for plugin cuDNN when one has already been registered",
]
REAL_LINES = [
    b"hub-embed: error: Module at '/m' could not be loaded: NotFoundError: Op type not registered 'X' in binary",
    b"Traceback (most recent call last):",
    b"E0000 00:00:1796152508.951211   13585 op_kernel.cc:1829] OP_REQUIRES failed at strided_slice_op.cc:117 : "
    b"INVALID_ARGUMENT: slice index 3 of dimension 0 out of bounds.",
    b"W0000 00:00:1796152508.951211   13585 cpu_allocator_impl.cc:84] Allocation of 4000000000 exceeds 10% of free "
    b"system memory.",
    b"E0000 00:00:1796152505.928835   13585 cuda_platform.cc:52] CUDA error: out of memory",
    b"2026-12-01 19:14:53,224 INFO hub_embed: Embedding in.txt (txt) with m into out, run 1",
    b"To enable the following instructions, read the manual.",
]
# Substrings no line of a quiet run may hold.
NOISE = (
    "absl::InitializeLog",
    "oneDNN",
    "cuda drivers",
    "cuInit",
    "cpu_feature_guard",
    "rebuild TensorFlow",
    "pkg_resources",
    "Resource module is not available",
)


@pytest.mark.parametrize("line", CHATTER_LINES)
def test_known_chatter_is_recognised(line):
    assert console.is_chatter(line) and console.is_chatter(line + b"\r")


@pytest.mark.parametrize("line", REAL_LINES)
def test_errors_warnings_and_our_own_lines_are_not_chatter(line):
    assert not console.is_chatter(line)


def test_the_filter_drops_only_chatter_and_keeps_order_and_a_last_partial_line():
    lines = [REAL_LINES[0], CHATTER_LINES[0], REAL_LINES[1], CHATTER_LINES[3], CHATTER_LINES[4], REAL_LINES[3]]
    out = io.BytesIO()
    console.filter_lines(io.BytesIO(b"\n".join(lines) + b"\nlast words"), out)
    assert out.getvalue() == b"\n".join([REAL_LINES[0], REAL_LINES[1], REAL_LINES[3], b"last words"])


@pytest.mark.parametrize(
    "orig_argv, argv0, expected",
    [
        (["python", "-m", "pipelines.embed", "--verbose"], "-m", ("pipelines.embed", ["--verbose"])),
        (["python", "-W", "ignore", "-X", "utf8", "-mpipelines.inspect", "h"], "-m", ("pipelines.inspect", ["h"])),
        (["python", "-m", "pytest", "tests"], "-m", None),
        (["python", "-c", "import pipelines", "-m", "pipelines.embed"], "-c", None),
        (["python", "script.py", "-m", "pipelines.embed"], "script.py", None),
        (["/v/bin/python", "/v/bin/hub-embed", "--input", "x"], "/v/bin/hub-embed", ("hub-embed", ["--input", "x"])),
    ],
)
def test_command_of_finds_the_projects_commands_only(orig_argv, argv0, expected):
    assert console.command_of(orig_argv, argv0) == expected


def test_verbose_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    assert console.verbose(["--verbose"]) and not console.verbose(["--input", "x"])
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv(console.VERBOSE_ENV, value)
        assert console.verbose([]) is expected


def test_known_python_warnings_and_log_lines_are_dropped_and_others_kept(caplog):
    import logging
    import warnings

    root = logging.getLogger()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_python()
        warnings.warn("pkg_resources is deprecated as an API. See https://setuptools.pypa.io/.", UserWarning)  # noqa: B028
        warnings.warn("some other deprecation", DeprecationWarning)  # noqa: B028
    try:
        with caplog.at_level(logging.WARNING):
            logging.warning(console.LOG_NOISE[0])
            logging.warning("a real warning")
    finally:
        root.removeFilter(console._is_log_noise)
    assert [str(w.message) for w in caught] == ["some other deprecation"]
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]


def test_importing_the_package_as_a_library_leaves_stderr_alone():
    code = "import os, pipelines; print(os.environ.get('HUB_EMBED_STDERR_FILTER'), os.path.samefile('/proc/self/fd/2', '/proc/self/fd/1'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.split() == ["None", "False"]


KILLED_SCRIPT = """
import os, signal, sys
from pipelines import console
console.filter_stderr()
os.write(2, sys.argv[1].encode() + b"\\n")
os.write(2, b"E0000 00:00:1796152505.928835   13585 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n")
os.write(2, b"last words before the kill\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_still_gets_its_last_lines_out():
    """The filter is a process of its own: it writes what it was given after the command died."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_SCRIPT, "a real error"], capture_output=True, timeout=60, env=_env()
    )
    assert done.returncode == -9
    assert done.stderr == b"a real error\nlast words before the kill\n"


# --------------------------------------------------------------------------- real commands


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without the settings that would quiet TensorFlow or make the command verbose."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", console.VERBOSE_ENV, console.FILTER_ENV)
    }
    return {**env, **extra}


def _embed(tmp_path, module: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    src = tmp_path / "in.txt"
    src.write_text("a first text\nand a second one\n")
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    argv = [
        sys.executable,
        "-m",
        "pipelines.embed",
        "--input",
        str(src),
        "--output",
        str(out),
        "--module",
        module,
        *flags,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=_env(**env))


def _command(module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, env=_env(**env)
    )


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in NOISE)]


@pytest.mark.slow
def test_a_quiet_run_prints_our_lines_only_and_verbose_prints_everything(tiny, tmp_path):
    from pipelines.hub import description

    # Described here, so the launchers read the description and TensorFlow is imported by the worker process
    # only (multi-process: it inherits the filtered stream); the next test has a launcher that imports it.
    description.describe(tiny.text)
    multi = ("--direct_running_mode=multi_processing", "--direct_num_workers=1")
    quiet = _embed(tmp_path, tiny.text, *multi)
    assert quiet.returncode == 0, quiet.stderr
    assert _noise(quiet.stderr) == [], quiet.stderr
    assert "INFO hub_embed: Embedding" in quiet.stderr and "rows in 2, embedded 2" in quiet.stdout
    loud = _embed(tmp_path, tiny.text, "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert [line for line in loud.stderr.splitlines() if console.is_chatter(line.encode())], loud.stderr
    assert "rows in 2, embedded 2" in loud.stdout
    # Another command, verbose through the environment (the module cache is new: inspect loads the module).
    env_verbose = _command(
        "pipelines.inspect", tiny.text, HUB_EMBED_VERBOSE="1", HUB_EMBED_CACHE_DIR=str(tmp_path / "c")
    )
    assert env_verbose.returncode == 0 and "signature" in env_verbose.stdout, env_verbose.stderr
    assert _noise(env_verbose.stderr), env_verbose.stderr


def _module_with_an_unregistered_op(source: str, path: str) -> str:
    """A copy of `source` whose functions call an op this TensorFlow does not have."""
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(source, path)
    model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        model.ParseFromString(f.read())
    renamed = 0
    for graph in model.meta_graphs:
        for function in graph.graph_def.library.function:
            for node in function.node_def:
                if node.op == "StringToHashBucketFast":
                    node.op = "HubEmbedNoSuchOp"
                    renamed += 1
    assert renamed, "the tiny text module no longer hashes its words: pick another op to rename"
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(model.SerializeToString())
    return path


@pytest.mark.slow
def test_a_module_that_fails_to_load_still_says_why_in_a_quiet_run(tiny, tmp_path):
    # The op gate refuses an unregistered op before loading (tests/security); trusted, the module gets as far as loading.
    broken = _module_with_an_unregistered_op(tiny.text, str(tmp_path / "broken"))
    (tmp_path / "runs").mkdir()
    result = _embed(tmp_path / "runs", broken, "--trust-module")
    assert result.returncode == 2
    assert "hub-embed: error: Module at" in result.stderr
    assert "Op type not registered 'HubEmbedNoSuchOp'" in result.stderr, result.stderr
    assert _noise(result.stderr) == [], result.stderr
    inspected = _command("pipelines.inspect", "--trust-module", broken)
    assert inspected.returncode == 2
    assert "error: Module at" in inspected.stderr and "Op type not registered 'HubEmbedNoSuchOp'" in inspected.stderr
    assert _noise(inspected.stderr) == [], inspected.stderr


@pytest.mark.parametrize(
    "command", ["embed", "inspect", "export", "finetune", "models.build_minilm", "models.build_efficientnet"]
)
def test_every_command_takes_verbose(command):
    """`--verbose` is a flag of each command, not an error of its argument parser."""
    done = subprocess.run(
        [sys.executable, "-m", f"pipelines.{command}", "--verbose", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--verbose" in done.stdout
