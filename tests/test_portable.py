"""The embedding job on Beam's PortableRunner with an EXTERNAL SDK worker pool installed from the wheel.

This is how Flink, Spark and Dataflow Runner v2 run Python workers: started
elsewhere, with the package installed from its wheel and
`requirements-worker.lock`, not from the checkout. The worker pool runs from a
clean venv (`tests.fixtures.worker_venv`) in another directory; the job is
launched from a third one with relative input, output and module paths, so a
path shipped relative (or a file the wheel does not ship) fails the run. The
table must equal an in-process DirectRunner run's bit for bit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines import embed
from pipelines.embedding import config, sinks
from tests.fixtures import worker_venv

ROWS = 24  # a few dozen rows: one module call, so both runs batch them alike


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, pool: subprocess.Popen, log: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pool.poll() is not None:
            raise AssertionError(f"the worker pool exited with {pool.returncode}:\n{_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"the worker pool did not listen on port {port} within {timeout_s}s:\n{_tail(log)}")


def _tail(path: str, chars: int = 4000) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


def _vectors(table_dir: str) -> dict[str, tuple[bytes, str]]:
    rows = sinks.read_table(table_dir).to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "duplicate ids"
    return {r["id"]: (np.asarray(r["embedding"], np.float32).tobytes(), r["content_hash"]) for r in rows}


@pytest.mark.slow
def test_the_wheel_ships_the_package_data(tmp_path):
    """The sample texts, ImageNet class names and bundled photos (with their licences) install with the wheel."""
    from pipelines.models import photos

    venv = worker_venv.ensure()
    listing = subprocess.run(
        [
            venv.python,
            "-c",
            "import os, pipelines.models.photos as p; print(p.PHOTOS_DIR); print(*sorted(os.listdir(p.PHOTOS_DIR)));"
            "import pipelines.data as d; print(*sorted(f for f in os.listdir(os.path.dirname(d.__file__)) if f.endswith(('.txt', '.gz', '.md'))))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=venv.env(),
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    installed_dir, installed_photos, data = listing.stdout.splitlines()
    assert installed_dir.startswith(venv.root + "/")
    assert installed_photos.split() == sorted(os.listdir(photos.PHOTOS_DIR))
    assert {"LICENSE.md", "chelsea.jpg"} <= set(installed_photos.split())
    assert data.split() == ["imagenet_classes.txt", "sample.txt"]  # the digits are an example's, out of the package


@pytest.fixture
def worker_pool(tmp_path):
    """An EXTERNAL worker pool (`worker_pool_main`) from the clean worker venv, started in its own directory."""
    venv = worker_venv.ensure()
    home = tmp_path / "worker-home"
    home.mkdir()
    env = venv.env()
    probe = subprocess.run(
        [venv.python, "-c", "import pipelines, apache_beam; print(pipelines.__file__)"],
        capture_output=True,
        text=True,
        cwd=home,
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(venv.root + "/"), probe.stdout  # the wheel's copy, not the checkout
    port = _free_port()
    log = str(tmp_path / "worker-pool.log")
    with open(log, "w") as out:
        pool = subprocess.Popen(
            [venv.python, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, pool, log)
        yield port, home, log
    finally:
        os.killpg(pool.pid, signal.SIGTERM)  # the pool and the SDK workers it started
        try:
            pool.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait()


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool_equals_the_in_process_run(worker_pool, tmp_path):
    port, worker_home, log = worker_pool
    module = os.path.abspath(config.DEFAULT_MODULE)
    assert os.path.isdir(module), f"the default module is built by `make setup` ({module} is missing)"
    launch = tmp_path / "launch"
    launch.mkdir()
    (launch / "modules").symlink_to(os.path.dirname(os.path.dirname(module)))
    with open(config.SAMPLE_INPUT) as f:
        (launch / "in.txt").write_text("".join(f.readlines()[:ROWS]))

    argv = [
        sys.executable,
        "-m",
        "pipelines.embed",
        "--input",
        "in.txt",
        "--output",
        "portable",
        "--module",
        "modules/all-minilm-l6-v2/1",
        "--runner",
        "PortableRunner",
        "--job_endpoint",
        "embed",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"localhost:{port}",
    ]
    run = subprocess.run(argv, cwd=launch, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- worker pool:\n{_tail(log)}"
    assert f"rows in {ROWS}, embedded {ROWS}, reused 0, failed 0" in run.stdout
    assert not os.path.exists(worker_home / "portable")  # the workers wrote where the launch meant

    direct = tmp_path / "direct"
    assert embed.main(["--input", str(launch / "in.txt"), "--output", str(direct), "--module", module]) == 0

    portable_rows, direct_rows = _vectors(str(launch / "portable")), _vectors(str(direct))
    assert sorted(portable_rows) == sorted(direct_rows) == sorted(f"{launch}/in.txt:{i}" for i in range(1, ROWS + 1))
    assert portable_rows == direct_rows  # float32 bytes and content hashes, row by row
    portable, reference = sinks.read_table_manifest(str(launch / "portable")), sinks.read_table_manifest(str(direct))
    assert portable["counts"] == reference["counts"]
    assert portable["table"]["fingerprint"] == reference["table"]["fingerprint"]
    assert portable["config"]["input"] == f"{launch}/in.txt"
    assert portable["config"]["module"] == f"{launch}/modules/all-minilm-l6-v2/1"
